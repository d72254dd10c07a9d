//! Typed configuration: every setting is an environment variable and a command-line flag,
//! parsed and validated once at start. A bad value stops the start with one line naming it.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// `tasknest [FLAGS] [COMMAND]`: with no command it serves.
#[derive(Debug, Parser)]
#[command(
    name = "tasknest",
    version,
    about = "Real-time GraphQL API for team task boards"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What the binary should do.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Migrate the database and serve the API (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print a signed JWT for a user, for development and integrations.
    Token {
        /// The user id (`sub` claim).
        #[arg(long)]
        sub: String,
        /// The display name (`name` claim).
        #[arg(long)]
        name: String,
        /// Avatar URL (`avatar` claim).
        #[arg(long)]
        avatar: Option<String>,
        /// How long the token is valid, e.g. `30m`, `24h`, `7d`.
        #[arg(long, default_value = "24h", value_parser = parse_ttl)]
        ttl: Duration,
    },
    /// Print the GraphQL schema (SDL) generated from the code.
    Schema,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Settings shared by every command.
#[derive(Debug, Clone, Parser)]
pub struct Config {
    /// Database: `sqlite://path.db` or `postgres://user@host/db`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://tasknest.db", value_parser = parse_database_url)]
    pub database_url: String,

    /// Maximum connections in the PostgreSQL pool (SQLite always uses one).
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: u32,

    /// How long a request waits for a database connection before failing with INTERNAL (so
    /// that requests fail fast, rather than hang, while the database is away).
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = duration("DATABASE_ACQUIRE_TIMEOUT"))]
    pub database_acquire_timeout: Duration,

    /// Redis for cross-instance events, e.g. `redis://127.0.0.1:6379`. Unset: in-process only.
    /// With `REDIS_CLUSTER=true`: seed nodes of a Redis Cluster, comma-separated.
    #[arg(long, env = "REDIS_URL", value_parser = parse_redis_url)]
    pub redis_url: Option<String>,

    /// `REDIS_URL` names a Redis Cluster (Redis 7 or later): project events then travel on
    /// sharded pub/sub (`SSUBSCRIBE`/`SPUBLISH`), each on the node owning its project's slot.
    #[arg(long, env = "REDIS_CLUSTER", default_value_t = false, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub redis_cluster: bool,

    /// HS256 secret for JWTs (at least 32 bytes). Unset: a random one per start (one dev
    /// instance only; several instances must share a configured secret).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, value_parser = parse_jwt_secret)]
    pub jwt_secret: Option<String>,

    /// The dev token printed at start when the server made its own secret (never read from
    /// the environment): the playground fills it into its headers.
    #[arg(skip)]
    pub dev_token: Option<String>,

    /// An identity provider's JWKS URL (its published signing keys, fetched and kept fresh);
    /// its tokens are accepted beside HS256 ones.
    #[arg(long, env = "JWT_JWKS_URL", value_parser = parse_jwks_url)]
    pub jwt_jwks_url: Option<String>,

    /// An identity provider's public key (PEM file); its tokens are accepted beside HS256
    /// ones. The key only verifies tokens of `JWT_PUBLIC_KEY_ALG`.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<std::path::PathBuf>,

    /// The algorithm `JWT_PUBLIC_KEY_FILE`'s key is pinned to: RS256, RS384, RS512, PS256,
    /// PS384, PS512, ES256, ES384 or EdDSA.
    #[arg(long, env = "JWT_PUBLIC_KEY_ALG", default_value = "RS256", value_parser = parse_public_key_alg)]
    pub jwt_public_key_alg: jsonwebtoken::Algorithm,

    /// The `iss` an identity provider's tokens must carry (unset: not checked).
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// The `aud` an identity provider's tokens must carry (unset: not checked).
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// The claim holding the user id.
    #[arg(long, env = "JWT_CLAIM_USER_ID", default_value = "sub")]
    pub jwt_claim_user_id: String,

    /// The claims tried for the display name, in order (comma-separated); none: the user id.
    #[arg(
        long,
        env = "JWT_CLAIM_NAME",
        value_delimiter = ',',
        default_value = "name,preferred_username,email"
    )]
    pub jwt_claim_name: Vec<String>,

    /// The claims tried for the avatar URL, in order (comma-separated).
    #[arg(
        long,
        env = "JWT_CLAIM_AVATAR",
        value_delimiter = ',',
        default_value = "picture,avatar"
    )]
    pub jwt_claim_avatar: Vec<String>,

    /// Address to listen on; port 0 picks a free port.
    #[arg(long = "addr", env = "TASKNEST_ADDR", default_value = "127.0.0.1:8000", value_parser = parse_addr)]
    pub addr: SocketAddr,

    /// Log format: `human` or `json`.
    #[arg(long, env = "TASKNEST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// How often each instance compares its rooms with the database's event counters.
    #[arg(long, env = "TASKNEST_GAP_CHECK_INTERVAL", default_value = "1s", value_parser = duration("TASKNEST_GAP_CHECK_INTERVAL"))]
    pub gap_check_interval: Duration,

    /// How long the event log keeps events; older cursors get CURSOR_EXPIRED.
    #[arg(long, env = "TASKNEST_EVENT_RETENTION", default_value = "30d", value_parser = duration("TASKNEST_EVENT_RETENTION"))]
    pub event_retention: Duration,

    /// Threads of the fan-out runtime (WebSocket connections and their deliveries); unset:
    /// one per core. With several instances on one machine, cores ÷ instances avoids
    /// threads taking turns on a core.
    #[arg(long, env = "TASKNEST_FANOUT_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub fanout_threads: Option<u16>,

    /// WebSocket: close with 4408 when `connection_init` has not come by then.
    #[arg(long, env = "TASKNEST_WS_INIT_TIMEOUT", default_value = "10s", value_parser = duration("TASKNEST_WS_INIT_TIMEOUT"))]
    pub ws_init_timeout: Duration,

    /// Presence: an instance silent this long has its users marked LEFT by the others.
    #[arg(long, env = "TASKNEST_PRESENCE_TIMEOUT", default_value = "30s", value_parser = duration("TASKNEST_PRESENCE_TIMEOUT"))]
    pub presence_timeout: Duration,

    /// Presence: FOCUS_CHANGED events of one user within this window are coalesced.
    #[arg(long, env = "TASKNEST_PRESENCE_COALESCE", default_value = "100ms", value_parser = duration("TASKNEST_PRESENCE_COALESCE"))]
    pub presence_coalesce: Duration,

    /// Largest request body accepted, in bytes (larger: 413).
    #[arg(long, env = "TASKNEST_MAX_BODY_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    pub max_body_bytes: u64,

    /// Deepest query accepted.
    #[arg(long, env = "TASKNEST_MAX_DEPTH", default_value_t = 15, value_parser = clap::value_parser!(u32).range(2..=100))]
    pub max_depth: u32,

    /// Most complex query accepted (one point per selected field).
    #[arg(long, env = "TASKNEST_MAX_COMPLEXITY", default_value_t = 2000, value_parser = clap::value_parser!(u32).range(10..=1_000_000))]
    pub max_complexity: u32,

    /// Most aliased fields in one query (alias bombs).
    #[arg(long, env = "TASKNEST_MAX_ALIASES", default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub max_aliases: u32,

    /// Whether schema introspection is allowed (`false` hides the schema in production).
    #[arg(long, env = "TASKNEST_INTROSPECTION", default_value_t = true, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub introspection: bool,

    /// Browser origins allowed by CORS, comma-separated (credentials allowed for them only).
    /// Empty: no cross-origin access.
    #[arg(long, env = "TASKNEST_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<String>,

    /// WebSocket: most operations one connection may run at once.
    #[arg(long, env = "TASKNEST_MAX_SUBSCRIPTIONS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_subscriptions: u32,

    /// Rate limit: mutations and operation starts a user may make at once (bucket size).
    #[arg(long, env = "TASKNEST_RATE_BURST", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_burst: u32,

    /// Rate limit: sustained mutations and operation starts per second per user.
    #[arg(long, env = "TASKNEST_RATE_PER_SECOND", default_value_t = 20.0, value_parser = parse_rate)]
    pub rate_per_second: f64,

    /// Most operations in one batched POST (an array body); 0 turns batching off.
    #[arg(long, env = "TASKNEST_MAX_BATCH", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub max_batch: u32,

    /// WebSocket: most connections one user may hold open on one instance (more: 4429).
    #[arg(long, env = "TASKNEST_MAX_CONNECTIONS_PER_USER", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_connections_per_user: u32,

    /// WebSocket: interval of server keep-alive pings.
    #[arg(long, env = "TASKNEST_WS_KEEPALIVE", default_value = "15s", value_parser = duration("TASKNEST_WS_KEEPALIVE"))]
    pub ws_keepalive: Duration,

    /// Webhooks may target loopback and private addresses (development and tests only).
    #[arg(long, env = "TASKNEST_WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub webhook_allow_private: bool,

    /// Webhooks: how long one delivery attempt may take.
    #[arg(long, env = "TASKNEST_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = duration("TASKNEST_WEBHOOK_TIMEOUT"))]
    pub webhook_timeout: Duration,

    /// Webhooks: delays between attempts at one event, comma-separated; the last repeats.
    #[arg(long, env = "TASKNEST_WEBHOOK_RETRY_SCHEDULE", default_value = "5s,30s,2m,10m,1h,6h", value_parser = parse_schedule)]
    pub webhook_retry_schedule: Schedule,

    /// Webhooks: a webhook failing this long is disabled.
    #[arg(long, env = "TASKNEST_WEBHOOK_GIVE_UP_AFTER", default_value = "3d", value_parser = duration("TASKNEST_WEBHOOK_GIVE_UP_AFTER"))]
    pub webhook_give_up_after: Duration,

    /// Webhooks: how long an instance's claim on a webhook lasts unrenewed (another
    /// instance takes over after it); longer than the timeout.
    #[arg(long, env = "TASKNEST_WEBHOOK_LEASE", default_value = "30s", value_parser = duration("TASKNEST_WEBHOOK_LEASE"))]
    pub webhook_lease: Duration,

    /// Webhooks: how often each instance looks for webhooks with work (its own commits
    /// wake it at once).
    #[arg(long, env = "TASKNEST_WEBHOOK_POLL_INTERVAL", default_value = "1s", value_parser = duration("TASKNEST_WEBHOOK_POLL_INTERVAL"))]
    pub webhook_poll_interval: Duration,

    /// Webhooks: most webhooks this instance delivers to at once; 0 makes it deliver none
    /// (an instance that only serves the API, beside dedicated delivery instances).
    #[arg(long, env = "TASKNEST_WEBHOOK_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub webhook_concurrency: u32,
}

impl Config {
    /// Whether `database_url` points at PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        is_postgres_url(&self.database_url)
    }

    /// A config for tests and embedding: every setting at the binary's own default (the
    /// environment is not read), with the given database and secret, on a free loopback
    /// port.
    pub fn for_tests(
        database_url: impl Into<String>,
        jwt_secret: impl Into<String>,
    ) -> anyhow::Result<Self> {
        use clap::{CommandFactory, FromArgMatches};
        let command = Self::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = command.try_get_matches_from(["tasknest"])?;
        let mut config = Self::from_arg_matches(&matches)?;
        config.database_url = database_url.into();
        config.jwt_secret = Some(jwt_secret.into());
        config.addr = SocketAddr::from(([127, 0, 0, 1], 0));
        Ok(config)
    }
}

fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

fn parse_database_url(value: &str) -> Result<String, String> {
    if is_postgres_url(value) {
        url::Url::parse(value)
            .map_err(|e| format!("DATABASE_URL is not a valid postgres:// URL ({e})"))?;
        Ok(value.to_owned())
    } else if value.starts_with("sqlite:") {
        Ok(value.to_owned())
    } else {
        Err("DATABASE_URL must start with sqlite:// or postgres://".to_owned())
    }
}

/// One Redis URL, or several comma-separated (a cluster's seed nodes).
fn parse_redis_url(value: &str) -> Result<String, String> {
    for node in value.split(',') {
        let url = url::Url::parse(node.trim())
            .map_err(|e| format!("REDIS_URL is not a valid URL ({e})"))?;
        if !matches!(url.scheme(), "redis" | "rediss") {
            return Err(format!(
                "REDIS_URL must start with redis:// or rediss://, not {}://",
                url.scheme()
            ));
        }
    }
    Ok(value.to_owned())
}

fn parse_jwt_secret(value: &str) -> Result<String, String> {
    if value.len() < 32 {
        return Err("JWT_SECRET must be at least 32 bytes long".to_owned());
    }
    Ok(value.to_owned())
}

fn parse_jwks_url(value: &str) -> Result<String, String> {
    match url::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "https" | "http") => Ok(value.to_owned()),
        _ => Err(format!("JWT_JWKS_URL: {value} is not an http(s) URL")),
    }
}

fn parse_public_key_alg(value: &str) -> Result<jsonwebtoken::Algorithm, String> {
    use jsonwebtoken::Algorithm::*;
    match value.parse::<jsonwebtoken::Algorithm>() {
        Ok(alg @ (RS256 | RS384 | RS512 | PS256 | PS384 | PS512 | ES256 | ES384 | EdDSA)) => {
            Ok(alg)
        }
        _ => Err(format!(
            "JWT_PUBLIC_KEY_ALG: {value} is not a public-key algorithm (RS256, ES256, EdDSA, …)"
        )),
    }
}

fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| "TASKNEST_ADDR must be IP:PORT, for example 127.0.0.1:8000".to_owned())
}

/// A parser for a positive duration setting (`500ms`, `1s`, `30d`) naming its variable.
fn duration(
    var: &'static str,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |value| match humantime::parse_duration(value) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "{var} must be a positive duration like 500ms, 10s or 30d"
        )),
    }
}

fn parse_origin(value: &str) -> Result<String, String> {
    let value = value.trim();
    let url = url::Url::parse(value).map_err(|_| {
        format!("TASKNEST_CORS_ORIGINS: {value} is not an origin like https://app.example.com")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() || url.path() != "/" {
        return Err(format!(
            "TASKNEST_CORS_ORIGINS: {value} is not an origin like https://app.example.com"
        ));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

fn parse_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err("TASKNEST_RATE_PER_SECOND must be a positive number".to_owned()),
    }
}

/// Delays between webhook attempts (a newtype, so that clap takes the list as one value).
pub type Schedule = Vec<Duration>;

fn parse_schedule(value: &str) -> Result<Schedule, String> {
    let delays: Result<Vec<Duration>, _> = value
        .split(',')
        .map(|d| humantime::parse_duration(d.trim()))
        .collect();
    match delays {
        Ok(delays) if !delays.is_empty() && delays.iter().all(|d| !d.is_zero()) => Ok(delays),
        _ => Err(
            "TASKNEST_WEBHOOK_RETRY_SCHEDULE must be positive durations separated by commas, like 5s,30s,2m"
                .to_owned(),
        ),
    }
}

fn parse_ttl(value: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(value)
        .map_err(|e| format!("--ttl must be a duration like 30m, 24h or 7d ({e})"))?;
    if ttl.is_zero() {
        return Err("--ttl must be longer than zero".to_owned());
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_address_names_its_variable() {
        let err = Cli::try_parse_from(["tasknest", "--addr", "nope"]).unwrap_err();
        assert!(err.to_string().contains("TASKNEST_ADDR"), "{err}");
    }

    #[test]
    fn fan_out_threads_default_to_the_cores_and_refuse_zero() {
        let cli = Cli::try_parse_from(["tasknest"]).unwrap();
        assert_eq!(cli.config.fanout_threads, None);
        let cli = Cli::try_parse_from(["tasknest", "--fanout-threads", "1"]).unwrap();
        assert_eq!(cli.config.fanout_threads, Some(1));
        let err = Cli::try_parse_from(["tasknest", "--fanout-threads", "0"]).unwrap_err();
        assert!(err.to_string().contains("fanout-threads"), "{err}");
    }

    #[test]
    fn a_mysql_url_is_refused() {
        let err = Cli::try_parse_from(["tasknest", "--database-url", "mysql://x"]).unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL"), "{err}");
    }

    #[test]
    fn a_short_jwt_secret_is_refused() {
        let err = Cli::try_parse_from(["tasknest", "--jwt-secret", "short"]).unwrap_err();
        assert!(err.to_string().contains("JWT_SECRET"), "{err}");
    }

    #[test]
    fn defaults_serve_sqlite_on_port_8000() {
        let cli = Cli::try_parse_from(["tasknest"]).unwrap();
        assert_eq!(cli.config.addr.port(), 8000);
        assert!(!cli.config.is_postgres());
    }
}
