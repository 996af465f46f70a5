//! `petrel bench`: a load generator that measures a NATS server the way
//! `nats bench` does (see `args::USAGE`): raw-protocol pub/sub clients on
//! tokio (`raw`), async-nats for request/reply, the service and
//! `--client async-nats`.

mod args;
mod client;
mod raw;
mod report;
mod run;

use std::io::Write;

/// Runs `petrel bench` with the arguments after `bench`; returns the exit code.
pub fn main(argv: &[String]) -> i32 {
    let o = match args::parse(argv) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{}", args::USAGE);
            return 0;
        }
        Err(e) => {
            eprintln!("petrel bench: {e}");
            eprint!("{}", args::USAGE);
            return 2;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("petrel bench: cannot start the runtime: {e}");
            return 1;
        }
    };
    if !o.json {
        let what = if o.request || o.reply {
            "request/reply"
        } else {
            "pub/sub"
        };
        println!(
            "Starting Core NATS {what} benchmark [subject={}, multisubject={}, msgs={}, msgsize={}, pubs={}, subs={}{}]",
            o.subject,
            o.multisubject,
            report::commas(o.msgs),
            report::human_bytes(o.size as f64),
            o.pubs,
            o.subs,
            o.queue.as_ref().map(|q| format!(", queue={q}")).unwrap_or_default()
        );
        let _ = std::io::stdout().flush();
    }
    let report = match rt.block_on(run::run(&o)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("petrel bench: {e}");
            return 1;
        }
    };
    rt.shutdown_background();
    if o.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    if let Some(path) = &o.csv {
        let id = format!("{:x}", fastrand::u64(..));
        let csv = report.csv(&id);
        if path == "-" {
            print!("{csv}");
        } else if let Err(e) = std::fs::write(path, csv) {
            eprintln!("petrel bench: --csv {path}: {e}");
            return 1;
        }
    }
    if report.ok() {
        0
    } else {
        for p in &report.problems {
            eprintln!("petrel bench: {p}");
        }
        1
    }
}
