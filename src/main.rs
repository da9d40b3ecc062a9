use clap::Parser;

use whatsapp_operator::cli::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", whatsapp_operator::crd::crd_yaml());
            Ok(())
        }
        Command::Run(args) => {
            whatsapp_operator::telemetry::init(cli.log_format);
            whatsapp_operator::run::run(*args).await
        }
    }
}
