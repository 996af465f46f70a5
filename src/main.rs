//! The `petrel` binary: a drop-in for `nats-server`.

mod bench;

use mimalloc::MiMalloc;

use petrel::cli::{self, Command};
use petrel::profile::heap::SamplingAlloc;
use petrel::proto::info::COMPAT_VERSION;
use petrel::server::{self, PETREL_VERSION};

/// mimalloc, with heap sampling for PROFILEZ heap/allocs profiles
/// (`PETREL_HEAP_SAMPLING=0` turns sampling off, `PETREL_HEAP_RATE` sets
/// the mean bytes between samples).
#[global_allocator]
static GLOBAL: SamplingAlloc<MiMalloc> = SamplingAlloc::new(MiMalloc);

/// Reloads re-read the same command line, so flags still win over the file.
fn options_source(args: Vec<String>) -> server::OptionsSource {
    std::sync::Arc::new(move || match cli::parse(&args) {
        Ok(Command::Serve(o, n)) => Ok((*o, n)),
        Ok(_) => Err("the command line no longer starts a server".into()),
        Err(e) => Err(e.to_string()),
    })
}

fn main() {
    if std::env::var("PETREL_HEAP_SAMPLING").is_ok_and(|v| v == "0") {
        petrel::profile::heap::set_enabled(false);
    }
    if let Some(rate) = std::env::var("PETREL_HEAP_RATE").ok().and_then(|v| v.parse().ok()) {
        petrel::profile::heap::set_rate(rate);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("bench") {
        std::process::exit(bench::main(&args[1..]));
    }
    if args.first().map(String::as_str) == Some("account-server") {
        std::process::exit(petrel::account_server::main(&args[1..]));
    }
    if args.first().map(String::as_str) == Some("profile") {
        std::process::exit(petrel::profile::command::main(&args[1..]));
    }
    let code = match cli::parse(&args) {
        Ok(Command::Signal(spec)) => match petrel::signal::send(&spec) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("petrel: {e}");
                1
            }
        },
        Ok(Command::Version) => {
            println!("petrel: v{PETREL_VERSION} (nats-server: v{COMPAT_VERSION})");
            0
        }
        Ok(Command::Help) => {
            print!("{}", cli::USAGE);
            0
        }
        Ok(Command::ConfigValid(path)) => {
            eprintln!("petrel: configuration file {} is valid", path.display());
            0
        }
        Ok(Command::Serve(opts, notices)) => match server::run(*opts, notices, options_source(args.clone())) {
            Ok(code) => code,
            Err(e) => {
                petrel::fatal!("{e}");
                1
            }
        },
        Err(e @ (cli::CliError::Config(_) | cli::CliError::TestWithoutConfig | cli::CliError::Invalid(_))) => {
            eprintln!("petrel: {e}");
            1
        }
        Err(e) => {
            eprintln!("petrel: {e}");
            eprint!("{}", cli::USAGE);
            2
        }
    };
    std::process::exit(code);
}
