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
/// Configuration sources, lowest precedence first: the TOML file, the seed documents'
/// variables (REDIS_URL, WEBSOCKET_PING_INTERVAL, …), HERALD_* variables (HERALD_LISTEN,
/// HERALD_API_KEY, HERALD_REDIS_URL, HERALD_DATABASE_URL, HERALD_<SECTION>__<KEY>), then flags.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about, long_about)]
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

    /// Print the merged configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,

    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let overrides = Overrides {
        config_file: cli.config,
        listen: cli.listen,
        api_key: cli.api_key,
        redis_url: cli.redis_url,
        database_url: cli.database_url,
        shards: cli.shards,
        log_format: cli.log_format,
        log_level: cli.log_level,
        sets: cli.sets,
    };
    let config = match config::load(&overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("herald: {e}");
            std::process::exit(2);
        }
    };
    if cli.print_config {
        print!("{}", toml::to_string_pretty(&config).context("rendering the configuration")?);
        return Ok(());
    }
    if cli.check_config {
        println!("configuration is valid");
        return Ok(());
    }
    init_logging(config.log.format, &config.log.level);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("herald-control")
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let running = herald::server::start(config).await?;
        let addr = running.local_addr;
        let mounts = running.node.config.server.mounts.join(", ");
        println!("herald listening on http://{addr} (WebSocket under {mounts}; API under /api)");
        running.run_until_signalled().await;
        anyhow::Ok(())
    })?;
    // Shard threads are parked on their runtimes; the process ends here.
    std::process::exit(0);
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}
