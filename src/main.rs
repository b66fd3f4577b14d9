//! The `herald` binary: parse flags, load configuration, run a node until signalled.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use herald::config::{self, LogFormat, Overrides};
use tracing_subscriber::EnvFilter;

/// Herald: a real-time gateway. Backends publish events (Redis PUBLISH or HTTP); Herald pushes
/// each one over WebSocket to exactly the connections that should see it.
///
/// With no configuration it runs embedded on 127.0.0.1:8000: no Redis, no database.
/// Configuration sources, lowest precedence first: the TOML file, the variables the
/// compatibility profiles know (REDIS_URL, WEBSOCKET_PING_INTERVAL, …), HERALD_* variables (HERALD_LISTEN,
/// HERALD_API_KEY, HERALD_REDIS_URL, HERALD_DATABASE_URL, HERALD_<SECTION>__<KEY>), then flags.
#[derive(Debug, Parser)]
#[command(name = "herald", version = herald::build_info::LONG_VERSION, about, long_about)]
struct Cli {
    /// TOML configuration file.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address and port to listen on (server.listen), e.g. 0.0.0.0:8000; port 0 picks one.
    #[arg(short, long, value_name = "ADDR")]
    listen: Option<String>,

    /// API key required by publish and admin routes (api.key).
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,

    /// Redis URL for the cross-node broker and publisher ingest (redis.url).
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,

    /// Database URL for history: sqlite://FILE or postgres://… (database.url).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,

    /// Directory for the embedded SQLite database when --database-url is not given
    /// (database.data_dir; created if missing). Default: /var/lib/herald as root or under
    /// systemd's StateDirectory, else ~/.local/share/herald.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Number of shard threads owning connections; 0 means one per CPU (server.shards).
    #[arg(long, value_name = "N")]
    shards: Option<usize>,

    /// Log format (log.format).
    #[arg(long, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,

    /// Log filter such as info or herald=debug (log.level).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,

    /// Set any configuration key, e.g. --set websocket.idle_timeout=5m. Repeatable; values are
    /// read like environment values (numbers, booleans, [arrays], or text).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = config::load::parse_set)]
    sets: Vec<(String, String)>,

    /// Print the merged configuration as TOML and exit: secrets masked, and after each value
    /// the source that set it (default, file, environment variable or flag).
    #[arg(long)]
    print_config: bool,

    /// Validate the configuration and exit (status 0 when valid, 2 when not).
    #[arg(long)]
    check_config: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

/// What to do instead of running a node.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Validate FILE (with the environment and flags, as a start would read them) and exit:
    /// status 0 when valid, 2 when not. Meant for systemd's ExecStartPre.
    CheckConfig {
        /// TOML configuration file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// GET URL and exit 0 when it answers 2xx, 1 otherwise: a health check for images without a
    /// shell or curl (the container's HEALTHCHECK).
    Probe {
        /// What to ask, e.g. http://127.0.0.1:8000/livez.
        #[arg(value_name = "URL", default_value = "http://127.0.0.1:8000/livez")]
        url: String,
    },
}

/// `herald probe URL`.
fn probe(url: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    let status = runtime.block_on(async {
        let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(5)).build()?;
        anyhow::Ok(client.get(url).send().await?.status())
    });
    match status {
        Ok(status) if status.is_success() => Ok(()),
        Ok(status) => {
            eprintln!("herald probe: {url} answered {status}");
            std::process::exit(1)
        }
        Err(e) => {
            eprintln!("herald probe: {url}: {e:#}");
            std::process::exit(1)
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let check_file = match &cli.command {
        Some(Command::CheckConfig { file }) => Some(file.clone()),
        Some(Command::Probe { url }) => return probe(url),
        None => None,
    };
    let overrides = Overrides {
        config_file: check_file.clone().or(cli.config),
        listen: cli.listen,
        api_key: cli.api_key,
        redis_url: cli.redis_url,
        database_url: cli.database_url,
        data_dir: cli.data_dir,
        shards: cli.shards,
        log_format: cli.log_format,
        log_level: cli.log_level,
        sets: cli.sets,
    };
    let (config, sources) = match config::load_with_sources(&overrides) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("herald: {e}");
            std::process::exit(2);
        }
    };
    if cli.print_config {
        print!("{}", config::show::render(&config, &sources)?);
        return Ok(());
    }
    if let Some(file) = check_file {
        println!("{}: configuration is valid", file.display());
        return Ok(());
    }
    if cli.check_config {
        println!("configuration is valid");
        return Ok(());
    }
    let set_level = init_logging(config.log.format, &config.log.level, config.audit.file.as_deref())?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("herald-control")
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let running = herald::server::start(config).await?;
        // Listened for before the node says it is listening: a SIGHUP that came before the
        // handler would end the process (the signal's default action).
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hangups) => {
                tokio::spawn(reload_on_hangup(hangups, overrides, running.node.clone(), set_level));
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP; configuration reload is unavailable"),
        }
        let addr = running.local_addr;
        let mounts = running.node.config.server.mounts.join(", ");
        let scheme = running.scheme;
        match running.node.config.database.data_dir() {
            Some(dir) => println!("herald stores its data in {}", dir.display()),
            None => println!(
                "herald stores its data in {}",
                config::show::mask_url(&running.node.config.database.effective_url())
            ),
        }
        println!("herald listening on {scheme}://{addr} (WebSocket under {mounts}; API under /api)");
        running.run_until_signalled().await;
        anyhow::Ok(())
    })?;
    // Shard threads are parked on their runtimes; the process ends here.
    std::process::exit(0);
}

/// Changes the log filter of the running process.
type SetLevel = Box<dyn Fn(&str) -> anyhow::Result<()> + Send + Sync>;

/// On SIGHUP, reads the configuration again (same file, environment and flags) and applies what
/// can change live (see `herald::reload`): limits, access rules, keys and credentials, and
/// `log.level`. An invalid configuration is refused with the reasons and the node carries on
/// unchanged; keys that changed but need a restart are named in the log and keep their value.
async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    overrides: Overrides,
    node: std::sync::Arc<herald::node::Node>,
    set_level: SetLevel,
) {
    while hangups.recv().await.is_some() {
        let next = match config::load(&overrides) {
            Ok(next) => next,
            Err(e) => {
                tracing::error!("configuration reload refused, nothing changed: {e}");
                continue;
            }
        };
        // The filter is checked before anything is swapped, so a bad level changes nothing.
        let old_level = node.live().log.level.clone();
        if next.log.level != old_level
            && let Err(e) = set_level(&next.log.level)
        {
            tracing::error!(error = %e, "configuration reload refused, nothing changed: log.level could not be applied");
            continue;
        }
        match herald::reload::apply(&node, &next).await {
            Ok(done) => {
                tracing::info!(applied = ?done.applied, needs_restart = ?done.needs_restart, "configuration reloaded");
                if !done.needs_restart.is_empty() {
                    tracing::warn!(keys = ?done.needs_restart, "these changes need a restart; the old values stay in force");
                }
            }
            Err(e) => {
                if next.log.level != old_level {
                    let _ = set_level(&old_level);
                }
                tracing::error!("configuration reload refused, nothing changed: {e}");
            }
        }
    }
}

/// Logs to stderr (human or JSON). With `audit.file`, audit records go there instead, one JSON
/// object per line, whatever the log level. Returns the means to change the level later.
fn init_logging(format: LogFormat, level: &str, audit_file: Option<&std::path::Path>) -> anyhow::Result<SetLevel> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::filter_fn;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let set_level: SetLevel = Box::new(move |level: &str| {
        let filter = EnvFilter::try_new(level)?;
        handle.reload(filter)?;
        Ok(())
    });
    let separate_audit = audit_file.is_some();
    let not_audit = filter_fn(move |meta| !(separate_audit && meta.target() == herald::audit::TARGET));
    let main_layer = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed(),
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(not_audit)
    .with_filter(filter);
    let audit_layer = match audit_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("audit.file: cannot open {}", path.display()))?;
            let layer = tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::sync::Mutex::new(file))
                .with_filter(filter_fn(|meta| meta.target() == herald::audit::TARGET));
            Some(layer)
        }
        None => None,
    };
    tracing_subscriber::registry().with(main_layer).with(audit_layer).init();
    Ok(set_level)
}
