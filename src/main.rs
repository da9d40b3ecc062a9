use clap::Parser;

use whatsapp_operator::cli::{Cli, Command};

/// The bodies the operator serves are megabytes, rebuilt after changes on several threads;
/// glibc's allocator kept tens of MiB of them in per-thread arenas under load (see
/// docs/performance.md), jemalloc gives them back.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", whatsapp_operator::k8s::crd::crd_yaml());
            Ok(())
        }
        Command::Run(args) => {
            whatsapp_operator::telemetry::init(cli.log_format);
            whatsapp_operator::run::run(*args).await
        }
    }
}
