//! `drip serve`: pick the store, declare the configured buckets, bind the
//! listeners and run the server until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

#[allow(unused_imports)] // `bail` is used only when a store feature is off.
use anyhow::{Context, Result, bail};
use drip::{Limiter, Store};
use tokio::net::TcpListener;

use crate::config;
use crate::server::{self, Listeners, Options};

/// Options of `drip serve`; each may also come from a `DRIP_*` variable.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address of the HTTP/JSON listener.
    #[arg(long, env = "DRIP_HTTP", default_value = "127.0.0.1:8080")]
    pub http: String,
    /// Address of the gRPC listener.
    #[arg(long, env = "DRIP_GRPC", default_value = "127.0.0.1:50051")]
    pub grpc: String,
    /// Where bucket state lives: memory, sqlite:PATH or redis://HOST:PORT.
    #[arg(long, env = "DRIP_STORE", default_value = "memory")]
    pub store: StoreSpec,
    /// A TOML file declaring buckets to configure at start ([buckets.NAME]).
    #[arg(long, env = "DRIP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Bearer token that admin calls (configure, delete) must carry.
    #[arg(long, env = "DRIP_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// This node's id in /v1/cluster (default: hostname:http-port).
    #[arg(long, env = "DRIP_NODE_ID")]
    pub node_id: Option<String>,
    /// Seconds a key's counters (total, allowed, rejected, processed) are
    /// kept after its last request once its bucket is empty, for buckets
    /// that do not set "counter_retention_s"; 0..=2592000, 0 lets them go
    /// with the water. Default: the config file's top-level
    /// counter_retention_s, else 60. Example: --counter-retention 300
    #[arg(long, env = "DRIP_COUNTER_RETENTION", value_name = "SECONDS",
          value_parser = parse_retention, allow_negative_numbers = true)]
    pub counter_retention: Option<Duration>,
}

fn parse_retention(s: &str) -> Result<Duration, String> {
    let seconds: f64 = s.parse().map_err(|_| {
        format!("{s:?} is not a number of seconds: --counter-retention takes 0..=2592000")
    })?;
    crate::limits::counter_retention(seconds)
        .map_err(|_| "--counter-retention must be a number of seconds in 0..=2592000".to_owned())
}

/// The `--store` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSpec {
    /// In this process.
    Memory,
    /// A SQLite file shared by the processes of one host.
    Sqlite(PathBuf),
    /// A Redis server shared by a cluster.
    Redis(String),
}

impl FromStr for StoreSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "memory" {
            Ok(StoreSpec::Memory)
        } else if let Some(path) = s.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err("sqlite: needs a path, e.g. sqlite:/var/lib/drip.db".to_owned());
            }
            Ok(StoreSpec::Sqlite(PathBuf::from(path)))
        } else if s.starts_with("redis://") || s.starts_with("rediss://") {
            Ok(StoreSpec::Redis(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a store: use memory, sqlite:PATH or redis://HOST:PORT"
            ))
        }
    }
}

/// Runs `drip serve` until a signal.
pub async fn run(args: Args) -> Result<()> {
    // Read the file before binding anything: a bad file is a start-up error.
    let declared = match &args.config {
        Some(path) => config::load(path, args.counter_retention)?,
        None => config::Declared {
            counter_retention: args
                .counter_retention
                .unwrap_or(crate::limits::DEFAULT_COUNTER_RETENTION),
            buckets: Vec::new(),
        },
    };
    let buckets = declared.buckets;
    let options = Options {
        admin_token: args.admin_token.clone(),
        node_id: args.node_id.clone(),
        counter_retention: declared.counter_retention,
        ..Options::default()
    };
    match &args.store {
        StoreSpec::Memory => serve(Limiter::memory(), &args, buckets, options).await,
        #[cfg(feature = "sqlite")]
        StoreSpec::Sqlite(path) => {
            let store = drip::store::sqlite::SqliteStore::open(path)
                .with_context(|| format!("opening the SQLite store {}", path.display()))?;
            serve(Limiter::new(store), &args, buckets, options).await
        }
        #[cfg(not(feature = "sqlite"))]
        StoreSpec::Sqlite(_) => bail!(
            "--store sqlite: is not available in this build: build drip-server with feature \"sqlite\""
        ),
        #[cfg(feature = "redis")]
        StoreSpec::Redis(url) => {
            use drip::store::redis::{RedisOptions, RedisStore};
            let store = RedisStore::connect(url, RedisOptions::default())
                .await
                .with_context(|| format!("connecting to the Redis store {url}"))?;
            serve(Limiter::new(store), &args, buckets, options).await
        }
        #[cfg(not(feature = "redis"))]
        StoreSpec::Redis(_) => bail!(
            "--store redis:// is not available in this build: build drip-server with feature \"redis\""
        ),
    }
}

async fn serve<S: Store>(
    limiter: Limiter<S>,
    args: &Args,
    buckets: Vec<(String, drip::Policy)>,
    options: Options,
) -> Result<()> {
    for (name, policy) in buckets {
        limiter
            .configure(&name, policy)
            .await
            .with_context(|| format!("configuring bucket {name:?} from the config file"))?;
    }
    let listeners = Listeners {
        http: TcpListener::bind(&args.http)
            .await
            .with_context(|| format!("binding the HTTP listener to {}", args.http))?,
        grpc: TcpListener::bind(&args.grpc)
            .await
            .with_context(|| format!("binding the gRPC listener to {}", args.grpc))?,
    };
    server::run(limiter, listeners, options, signal()).await
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
