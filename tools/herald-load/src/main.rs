//! `herald-load`: drives a running Herald over real sockets and prints figures a person can
//! compare. See BENCHMARKS.md for the command lines and results.

mod chat;
mod client;
mod connections;
mod fanout;
mod floor;
mod report;
mod soak;
mod ws;
mod yardstick;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "herald-load", version, about = "Load tool for Herald: fan-out, connections and chat benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// N clients subscribed to a channel (or in rooms, or as one user's tabs); events published
    /// at a fixed rate or as fast as possible; prints deliveries per second, latency and loss.
    Fanout(fanout::Args),
    /// N idle connections over several source addresses and processes; prints the server's
    /// resident memory per connection and the connect rate.
    Connections(connections::Args),
    /// A bounded run of churn and traffic; fails if the node's memory or descriptors grow after
    /// the warm-up.
    Soak(soak::Args),
    /// Clients sending chat messages into rooms with persistence on; prints acknowledged
    /// messages per second and ack latency.
    Chat(chat::Args),
    /// The yardstick server that `fanout --via yardstick` starts: reads events, one JSON text per
    /// line, from standard input and sends each to every connection.
    #[command(hide = true)]
    Yardstick(yardstick::ServeArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Yardstick(args) = cli.command {
        // Its own runtime, sized like the server it stands for.
        return yardstick::serve(args);
    }
    report::now_ns();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Fanout(args) => fanout::run(args).await,
            Command::Chat(args) => chat::run(args).await,
            Command::Connections(args) => connections::run(args).await,
            Command::Soak(args) => soak::run(args).await,
            Command::Yardstick(_) => unreachable!("served above"),
        }
    })
}
