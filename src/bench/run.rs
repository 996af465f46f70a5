//! The clients of a `petrel bench` run, on a tokio runtime, one connection
//! each: raw-protocol pub/sub (`raw.rs`, the default) or async-nats
//! (`--client async-nats`, and always for request/reply and the service).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::client::RequestErrorKind;
use async_nats::{Client, ConnectOptions, Event, Subject};
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::args::{ClientKind, Mode, Opts};
use super::client::{close_sample, due, Counter, Ctx, Stop};
use super::raw;
use super::report::{commas, Report, Sample};

/// Connects one client with the run's credentials.
async fn connect(o: &Opts, name: String, sub_capacity: usize, drops: Arc<AtomicU64>) -> Result<Client, String> {
    let mut co = ConnectOptions::new()
        .name(name)
        .subscription_capacity(sub_capacity.max(1024))
        .request_timeout(Some(request_timeout(o)))
        .event_callback(move |event| {
            let drops = drops.clone();
            async move {
                if let Event::SlowConsumer(_) = event {
                    drops.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    if let Some(path) = &o.creds {
        co = co
            .credentials_file(path)
            .await
            .map_err(|e| format!("--creds {path}: {e}"))?;
    }
    if let Some(ca) = &o.tlsca {
        co = co.add_root_certificates(ca.into()).require_tls(true);
    }
    match (&o.user, &o.password) {
        (Some(u), Some(p)) => co = co.user_and_password(u.clone(), p.clone()),
        (Some(t), None) => co = co.token(t.clone()),
        _ => {}
    }
    if let Some(t) = &o.token {
        co = co.token(t.clone());
    }
    let servers: Vec<&str> = o.server.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    co.connect(servers)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", o.server))
}

fn request_timeout(o: &Opts) -> Duration {
    if o.timeout.is_zero() {
        Duration::from_secs(10)
    } else {
        o.timeout
    }
}

/// A round trip through the server: a request to a subject nobody serves,
/// answered by the server's no-responders status after everything this
/// client sent before it. (async-nats 0.38's `flush` sends no PING.)
async fn round_trip(client: &Client) -> Result<(), String> {
    let subject = format!("_BENCH_SYNC.{:016x}", fastrand::u64(..));
    match client.request(subject, Bytes::new()).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == RequestErrorKind::NoResponders => Ok(()),
        Err(e) => Err(format!("round trip: {e}")),
    }
}

fn share(total: u64, clients: usize, i: usize) -> u64 {
    total / clients as u64 + u64::from((i as u64) < total % clients as u64)
}

fn sample(id: String, expected: Option<u64>) -> Sample {
    Sample {
        id,
        msgs: 0,
        bytes: 0,
        expected,
        start: None,
        end: None,
        error: None,
    }
}

/// Subscriber (or responder) loop: counts messages until `expected`, the
/// group is done, or the run stops; then, once publishers are done, one
/// round trip and a short drain to catch extra messages.
async fn subscriber(
    client: Client,
    mut sub: async_nats::Subscriber,
    mut s: Sample,
    counter: Arc<Counter>,
    mut ctx: Ctx,
    reply: bool,
) -> Sample {
    let mut n = 0u64;
    let mut bytes = 0u64;
    loop {
        if s.expected.is_some_and(|e| n >= e) {
            break;
        }
        tokio::select! {
            biased;
            m = sub.next() => match m {
                Some(m) => {
                    let now = Instant::now();
                    if s.start.is_none() {
                        s.start = Some(now);
                    }
                    s.end = Some(now);
                    n += 1;
                    bytes += m.payload.len() as u64;
                    counter.set(n);
                    if reply {
                        if let Some(to) = m.reply {
                            if let Err(e) = client.publish(to, m.payload).await {
                                s.error = Some(format!("reply: {e}"));
                                break;
                            }
                        }
                    }
                }
                None => {
                    s.error = Some("subscription closed".into());
                    break;
                }
            },
            _ = ctx.stop.changed() => break,
        }
    }
    match *ctx.stop.borrow() {
        Stop::TimedOut => {
            s.error = Some(format!("no message for {:?}", ctx.timeout));
        }
        Stop::Interrupted => s.error = Some("interrupted".into()),
        _ => {}
    }
    if s.error.is_none() {
        // Extra messages: wait for the publishers, go round the server once
        // and take whatever is still queued.
        let _ = ctx.pubs_done.wait_for(|d| *d).await;
        if reply {
            let _ = client.flush().await;
        }
        if round_trip(&client).await.is_ok() {
            while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(20), sub.next()).await {
                n += 1;
                bytes += m.payload.len() as u64;
            }
        }
        counter.set(n);
    }
    s.msgs = n;
    s.bytes = bytes;
    s
}

/// `service serve`: an async-nats service (`nats-bench-service` 1.0.0, as
/// the nats CLI's) whose endpoint echoes each request.
async fn server(client: Client, subject: String, mut s: Sample, counter: Arc<Counter>, mut ctx: Ctx) -> Sample {
    use async_nats::service::ServiceExt;
    let service = match client
        .service_builder()
        .description("petrel bench service")
        .start("nats-bench-service", "1.0.0")
        .await
    {
        Ok(sv) => sv,
        Err(e) => {
            s.error = Some(format!("service: {e}"));
            return s;
        }
    };
    let mut endpoint = match service.endpoint(subject).await {
        Ok(ep) => ep,
        Err(e) => {
            s.error = Some(format!("endpoint: {e}"));
            return s;
        }
    };
    let (mut n, mut bytes) = (0u64, 0u64);
    loop {
        tokio::select! {
            biased;
            r = endpoint.next() => match r {
                Some(req) => {
                    let now = Instant::now();
                    s.start.get_or_insert(now);
                    s.end = Some(now);
                    n += 1;
                    bytes += req.message.payload.len() as u64;
                    counter.set(n);
                    let body = if req.message.payload.is_empty() { Bytes::from_static(b"ok") } else { req.message.payload.clone() };
                    if let Err(e) = req.respond(Ok(body)).await {
                        s.error = Some(format!("respond: {e}"));
                        break;
                    }
                }
                None => break,
            },
            _ = ctx.stop.changed() => break,
        }
    }
    if *ctx.stop.borrow() == Stop::TimedOut {
        s.error = Some(format!("no request for {:?}", ctx.timeout));
    }
    let _ = client.flush().await;
    s.msgs = n;
    s.bytes = bytes;
    s
}

struct PubJob {
    client: Client,
    subject: Subject,
    multisubject: bool,
    n: u64,
    payload: Bytes,
    rate: f64,
}

async fn publisher(job: PubJob, mut s: Sample, counter: Arc<Counter>, mut ctx: Ctx) -> Sample {
    let start = Instant::now();
    s.start = Some(start);
    let work = async {
        for i in 0..job.n {
            if job.rate > 0.0 {
                let due = due(start, i, job.rate);
                if Instant::now() < due {
                    tokio::time::sleep_until(due.into()).await;
                }
            }
            let subject = if job.multisubject {
                Subject::from(format!("{}.{i}", job.subject))
            } else {
                job.subject.clone()
            };
            job.client
                .publish(subject, job.payload.clone())
                .await
                .map_err(|e| format!("publish: {e}"))?;
            counter.set(i + 1);
        }
        round_trip(&job.client).await
    };
    close_sample(work, &mut ctx, s, &counter, job.payload.len()).await
}

/// Closed-loop requests, one at a time. With a rate, request `i` is due at
/// `start + i / rate` and its latency counts from then, so a slow reply
/// that delays later requests shows in their latency too (no coordinated
/// omission).
async fn requester(job: PubJob, mut s: Sample, counter: Arc<Counter>, mut ctx: Ctx) -> (Sample, Histogram<u64>) {
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).expect("histogram bounds");
    let start = Instant::now();
    s.start = Some(start);
    let work = async {
        for i in 0..job.n {
            let intended = if job.rate > 0.0 {
                let due = due(start, i, job.rate);
                if Instant::now() < due {
                    tokio::time::sleep_until(due.into()).await;
                }
                due
            } else {
                Instant::now()
            };
            let reply = job
                .client
                .request(job.subject.clone(), job.payload.clone())
                .await
                .map_err(|e| format!("request {}: {e}", i + 1))?;
            let p = &reply.payload;
            if p.first() == Some(&b'-') || memchr::memmem::find(p, b"error").is_some() {
                return Err(format!(
                    "request {}: error reply {:?}",
                    i + 1,
                    String::from_utf8_lossy(p)
                ));
            }
            h.saturating_record(intended.elapsed().as_nanos() as u64);
            counter.set(i + 1);
        }
        Ok::<(), String>(())
    };
    let s = close_sample(work, &mut ctx, s, &counter, job.payload.len()).await;
    (s, h)
}

/// Runs the whole benchmark; `Err` only when it cannot start (connect,
/// subscribe).
pub async fn run(o: &Opts) -> Result<Report, String> {
    let (stop_tx, stop_rx) = watch::channel(Stop::Running);
    let (pubs_tx, pubs_rx) = watch::channel(o.pubs == 0);
    let ctx = Ctx {
        stop: stop_rx,
        pubs_done: pubs_rx,
        timeout: o.timeout,
    };
    let drops = Arc::new(AtomicU64::new(0));
    let requesting = o.request;
    let replying = o.reply;
    let group = o.queue.is_some() || replying;
    // Subscribers expect every message; a group expects them once between its members.
    let per_sub = if group { None } else { Some(o.msgs) };
    let group_total = if group && o.msgs > 0 { Some(o.msgs) } else { None };
    // Plain pub/sub takes the raw-protocol client unless async-nats is asked for.
    let raw_client = o.client == ClientKind::Raw
        && !requesting
        && !replying
        && o.mode != Mode::Serve
        && o.tlsca.is_none()
        && !["tls://", "ws://", "wss://"]
            .iter()
            .any(|scheme| o.server.to_ascii_lowercase().contains(scheme));
    let bytes_per_msg = o.size + 96;
    let capacity = ((256usize << 20) / bytes_per_msg).clamp(1024, 1 << 20);

    // Subscribers first, each in place (round trip) before any publisher starts.
    let mut sub_counters = Vec::new();
    let mut sub_tasks: Vec<JoinHandle<Sample>> = Vec::new();
    let sub_subject = if o.multisubject {
        format!("{}.*", o.subject)
    } else {
        o.subject.clone()
    };
    for i in 0..o.subs {
        let counter = Arc::new(Counter::default());
        sub_counters.push(counter.clone());
        let id = format!("S{i}");
        if o.mode == Mode::Serve {
            let client = connect(o, format!("petrel-bench-sub-{i}"), capacity, drops.clone()).await?;
            let (subject, s, ctx) = (o.subject.clone(), sample(id, None), ctx.clone());
            let c2 = client.clone();
            sub_tasks.push(tokio::spawn(server(c2, subject, s, counter, ctx)));
            // The service subscribes inside its task; give it a moment, then sync.
            tokio::time::sleep(Duration::from_millis(20)).await;
            round_trip(&client).await?;
            continue;
        }
        if raw_client {
            let mut conn = raw::connect(o, &format!("petrel-bench-sub-{i}"), request_timeout(o)).await?;
            raw::subscribe(&mut conn, &sub_subject, o.queue.as_deref()).await?;
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            let task = tokio::spawn(raw::subscriber(
                conn,
                sample(id, per_sub),
                counter,
                ctx.clone(),
                ready_tx,
            ));
            match tokio::time::timeout(request_timeout(o), ready_rx).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => return Err(format!("subscribe: {e}")),
                Ok(Err(_)) => return Err("subscribe: the subscriber stopped".into()),
                Err(_) => return Err("subscribe: no PONG from the server".into()),
            }
            sub_tasks.push(task);
            continue;
        }
        let client = connect(o, format!("petrel-bench-sub-{i}"), capacity, drops.clone()).await?;
        let sub = match (&o.queue, replying) {
            (Some(q), _) => client.queue_subscribe(sub_subject.clone(), q.clone()).await,
            (None, true) => client.queue_subscribe(sub_subject.clone(), "bench-reply".into()).await,
            (None, false) => client.subscribe(sub_subject.clone()).await,
        }
        .map_err(|e| format!("subscribe: {e}"))?;
        round_trip(&client).await?;
        sub_tasks.push(tokio::spawn(subscriber(
            client,
            sub,
            sample(id, per_sub),
            counter,
            ctx.clone(),
            replying,
        )));
    }

    // Publishers connect first, then start together.
    let payload = Bytes::from(vec![0u8; o.size]);
    let mut jobs = Vec::new();
    let mut raw_jobs = Vec::new();
    for i in 0..o.pubs {
        if raw_client {
            let conn = raw::connect(o, &format!("petrel-bench-pub-{i}"), request_timeout(o)).await?;
            raw_jobs.push(raw::PubJob {
                conn,
                subject: o.subject.clone(),
                multisubject: o.multisubject,
                n: share(o.msgs, o.pubs, i),
                size: o.size,
                rate: o.rate,
            });
            continue;
        }
        let client = connect(o, format!("petrel-bench-pub-{i}"), 1024, drops.clone()).await?;
        jobs.push(PubJob {
            client,
            subject: Subject::from(o.subject.clone()),
            multisubject: o.multisubject,
            n: share(o.msgs, o.pubs, i),
            payload: payload.clone(),
            rate: o.rate,
        });
    }
    let mut pub_counters = Vec::new();
    let mut pub_tasks: Vec<JoinHandle<Sample>> = Vec::new();
    let mut req_tasks: Vec<JoinHandle<(Sample, Histogram<u64>)>> = Vec::new();
    for (i, job) in raw_jobs.into_iter().enumerate() {
        let counter = Arc::new(Counter::default());
        pub_counters.push(counter.clone());
        let s = sample(format!("P{i}"), Some(job.n));
        pub_tasks.push(tokio::spawn(raw::publisher(job, s, counter, ctx.clone())));
    }
    for (i, job) in jobs.into_iter().enumerate() {
        let counter = Arc::new(Counter::default());
        pub_counters.push(counter.clone());
        let s = sample(format!("P{i}"), Some(job.n));
        if requesting {
            req_tasks.push(tokio::spawn(requester(job, s, counter, ctx.clone())));
        } else {
            pub_tasks.push(tokio::spawn(publisher(job, s, counter, ctx.clone())));
        }
    }

    // Watch progress: idle timeout, group completion, progress bars, Ctrl-C.
    let bars = Bars::new(o, group_total.or(per_sub.map(|p| p * o.subs as u64)));
    let sum = |c: &[Arc<Counter>]| c.iter().map(|c| c.get()).sum::<u64>();
    let mut last = (u64::MAX, Instant::now());
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let mut tick = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            _ = &mut ctrl_c => { let _ = stop_tx.send(Stop::Interrupted); }
        }
        tick += 1;
        let (p, s) = (sum(&pub_counters), sum(&sub_counters));
        if tick.is_multiple_of(20) {
            bars.update(p, s);
        }
        let pubs_finished = pub_tasks.iter().all(|t| t.is_finished()) && req_tasks.iter().all(|t| t.is_finished());
        if pubs_finished && !*pubs_tx.borrow() {
            let _ = pubs_tx.send(true);
        }
        if let Some(total) = group_total {
            if s >= total && *stop_tx.borrow() == Stop::Running {
                let _ = stop_tx.send(Stop::GroupDone);
            }
        }
        if pubs_finished && sub_tasks.iter().all(|t| t.is_finished()) {
            break;
        }
        if p + s != last.0 {
            last = (p + s, Instant::now());
        } else if !o.timeout.is_zero() && last.1.elapsed() > o.timeout && *stop_tx.borrow() == Stop::Running {
            let _ = stop_tx.send(Stop::TimedOut);
        }
    }
    bars.finish();

    let mut pubs = Vec::new();
    let mut latency: Option<Histogram<u64>> = None;
    for t in pub_tasks {
        pubs.push(t.await.map_err(|e| e.to_string())?);
    }
    for t in req_tasks {
        let (s, h) = t.await.map_err(|e| e.to_string())?;
        pubs.push(s);
        match &mut latency {
            Some(all) => all.add(&h).map_err(|e| e.to_string())?,
            None => latency = Some(h),
        }
    }
    let mut subs = Vec::new();
    for t in sub_tasks {
        subs.push(t.await.map_err(|e| e.to_string())?);
    }

    let mut problems = Vec::new();
    for s in pubs.iter().chain(&subs) {
        if let Some(e) = s.expected {
            if s.msgs != e {
                problems.push(format!(
                    "client {} got {} of {} messages",
                    s.id,
                    commas(s.msgs),
                    commas(e)
                ));
            }
        }
        if let Some(err) = &s.error {
            problems.push(format!("client {}: {err}", s.id));
        }
    }
    if let Some(total) = group_total {
        let got: u64 = subs.iter().map(|s| s.msgs).sum();
        if got != total {
            problems.push(format!("the group got {} of {} messages", commas(got), commas(total)));
        }
    }
    let client_drops = drops.load(Ordering::Relaxed);
    if client_drops > 0 {
        problems.push(format!(
            "the client library dropped messages ({client_drops} slow consumer events)"
        ));
    }
    let (title, pl, sl) = if requesting || replying {
        ("Request/Reply", "Req", "Rep")
    } else {
        ("Pub/Sub", "Pub", "Sub")
    };
    Ok(Report {
        title: title.into(),
        config: json!({
            "mode": format!("{:?}", o.mode).to_lowercase(), "subject": o.subject, "server": o.server,
            "msgs": o.msgs, "size": o.size, "pubs": o.pubs, "subs": o.subs, "request": o.request,
            "reply": o.reply, "queue": o.queue, "multisubject": o.multisubject, "rate": o.rate,
            "client": if raw_client { "raw" } else { "async-nats" },
        }),
        pubs,
        subs,
        pub_label: pl,
        sub_label: sl,
        latency,
        problems,
        client_drops,
    })
}

/// indicatif bars on stderr, updated from the counters by the watcher.
struct Bars {
    bars: Option<(
        indicatif::MultiProgress,
        Option<indicatif::ProgressBar>,
        Option<indicatif::ProgressBar>,
    )>,
}

impl Bars {
    fn new(o: &Opts, sub_total: Option<u64>) -> Bars {
        use std::io::IsTerminal;
        if !o.progress || o.json || !std::io::stderr().is_terminal() {
            return Bars { bars: None };
        }
        let style = indicatif::ProgressStyle::with_template(
            "{prefix:>4} [{bar:40.cyan/blue}] {human_pos:>11}/{human_len:11} {per_sec:>14} {eta}",
        )
        .expect("template")
        .progress_chars("=> ");
        let m = indicatif::MultiProgress::new();
        let mk = |label: &str, len: u64| {
            let b = m.add(indicatif::ProgressBar::new(len));
            b.set_style(style.clone());
            b.set_prefix(label.to_string());
            b
        };
        let p = (o.pubs > 0).then(|| mk(if o.request { "req" } else { "pub" }, o.msgs));
        let s = (o.subs > 0).then(|| mk(if o.reply { "rep" } else { "sub" }, sub_total.unwrap_or(0)));
        Bars { bars: Some((m, p, s)) }
    }

    fn update(&self, p: u64, s: u64) {
        if let Some((_, pb, sb)) = &self.bars {
            if let Some(b) = pb {
                b.set_position(p);
            }
            if let Some(b) = sb {
                b.set_position(s);
            }
        }
    }

    fn finish(&self) {
        if let Some((_, pb, sb)) = &self.bars {
            for b in [pb, sb].into_iter().flatten() {
                b.finish_and_clear();
            }
        }
    }
}
