//! The `tasknest` binary: parse config, init tracing, run the command.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tasknest::auth::JwtKeys;
use tasknest::config::{Cli, Command};
use tasknest::{Application, db, graphql, shutdown_signal, telemetry};

/// mimalloc instead of glibc's malloc: a request allocates and frees thousands of small
/// objects (GraphQL values, JSON maps, futures), and glibc's malloc and free were a quarter
/// of the server's instructions per `updateTask` (callgrind; README, "sixth pass"). Built
/// without transparent huge pages (`no_thp`), which otherwise added ~18 MiB of RSS at start.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            let message = err.to_string();
            let first = message.lines().next().unwrap_or("invalid configuration");
            eprintln!("{first}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(cli.config.log_format);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = cli.config;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Schema => {
            println!("{}", graphql::sdl());
            Ok(())
        }
        Command::Migrate => {
            db::migrate(&config).await?;
            tracing::info!(database = %db::redact(&config.database_url), "migrations applied");
            Ok(())
        }
        Command::Token {
            sub,
            name,
            avatar,
            ttl,
        } => {
            let secret = config.jwt_secret.as_deref().ok_or_else(|| {
                anyhow::anyhow!("JWT_SECRET must be set to mint a token the server will accept")
            })?;
            let token =
                JwtKeys::new(secret.as_bytes()).mint(&sub, &name, avatar.as_deref(), ttl)?;
            println!("{token}");
            Ok(())
        }
        Command::Serve => {
            let dev_secret = config.jwt_secret.is_none();
            if dev_secret {
                let bytes: [u8; 32] = rand::random();
                let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                config.dev_token = Some(dev_token(&secret)?);
                config.jwt_secret = Some(secret);
            }
            let app = Application::build(config.clone()).await?;
            let addr = app.local_addr();
            tracing::info!(%addr, database = %db::redact(&config.database_url), "TaskNest listening");
            if dev_secret {
                print_dev_banner(&config, addr)?;
            }
            app.run_until(shutdown_signal()).await?;
            Ok(())
        }
    }
}

/// A token for user "dev", valid 24 h, signed with the secret made at start.
fn dev_token(secret: &str) -> anyhow::Result<String> {
    let token = JwtKeys::new(secret.as_bytes()).mint(
        "dev",
        "Dev User",
        None,
        Duration::from_secs(24 * 3600),
    )?;
    Ok(token)
}

/// The one-time dev token for a secret made at start; it stops working at the next start.
fn print_dev_banner(config: &tasknest::Config, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let token = config.dev_token.clone().unwrap_or_default();
    println!();
    println!("JWT_SECRET is not set: using a random secret for this run only.");
    println!("GraphiQL: http://{addr}/   GraphQL: http://{addr}/graphql");
    println!("Dev token for user \"dev\" (valid 24 h):");
    println!();
    println!("{token}");
    println!();
    println!("GraphiQL's Headers tab already holds it; for other clients:");
    println!();
    println!("{{\"Authorization\": \"Bearer {token}\"}}");
    println!();
    Ok(())
}
