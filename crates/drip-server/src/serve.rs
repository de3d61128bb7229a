//! `drip serve`: pick the store, declare the configured buckets, bind the
//! listeners and run the server until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

#[allow(unused_imports)] // `bail` is used only when a store feature is off.
use anyhow::{Context, Result, bail};
use drip::{Limiter, Store};
use tokio::net::TcpListener;

use crate::cluster::{ClusterOptions, OnStoreError, options::parse_duration};
use crate::config::{self, ClusterSection};
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
    /// Where bucket state lives: memory, sqlite:PATH, redis://HOST:PORT, or
    /// a comma-separated list of redis:// URLs (the seed nodes of a Redis
    /// Cluster). Nodes given the same Redis form one cluster.
    #[arg(long, env = "DRIP_STORE", default_value = "memory")]
    pub store: StoreSpec,
    /// A TOML file declaring buckets to configure at start ([buckets.NAME]).
    #[arg(long, env = "DRIP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Bearer token that admin calls (configure, delete) must carry.
    #[arg(long, env = "DRIP_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Serve Envoy's rate limit service (envoy.service.ratelimit.v3) on the
    /// gRPC listener, with rules from envoyproxy/ratelimit's YAML format: a
    /// file, or a directory of .yaml/.yml files; repeatable (comma-separated
    /// in DRIP_RLS_CONFIG). Checked at start (errors name file, line and
    /// field), reloaded when the files change. Example:
    /// --rls-config /etc/ratelimit/config
    #[arg(long, env = "DRIP_RLS_CONFIG", value_delimiter = ',')]
    pub rls_config: Vec<PathBuf>,
    /// RLS: answer OK to everything while still deciding and counting
    /// (envoyproxy/ratelimit's global shadow mode).
    #[arg(long, env = "DRIP_RLS_SHADOW_MODE")]
    pub rls_shadow_mode: bool,
    /// RLS: add the IETF RateLimit-Policy / RateLimit fields (and
    /// Retry-After when over the limit) to response_headers_to_add, for
    /// Envoy to pass on.
    #[arg(long, env = "DRIP_RLS_HEADERS")]
    pub rls_headers: bool,
    /// RLS: how often the configuration files are checked for changes
    /// (more than 0), e.g. 1s or 250ms.
    #[arg(long, env = "DRIP_RLS_RELOAD_EVERY", value_parser = parse_duration, default_value = "1s")]
    pub rls_reload_every: Duration,
    /// This node's id in /v1/cluster (default: hostname:http-port).
    #[arg(long, env = "DRIP_NODE_ID")]
    pub node_id: Option<String>,
    /// Redis stores: how often this node heartbeats its member record and
    /// renews the leader lease, e.g. 1s or 250ms [default: 1s; also
    /// `[cluster] heartbeat` in --config].
    #[arg(long, env = "DRIP_HEARTBEAT", value_parser = parse_duration)]
    pub heartbeat: Option<Duration>,
    /// Redis stores: a member not heard from for this long is listed as not
    /// alive [default: 3s].
    #[arg(long, env = "DRIP_MEMBER_TIMEOUT", value_parser = parse_duration)]
    pub member_timeout: Option<Duration>,
    /// Redis stores: the leader lease's length; a killed leader is replaced
    /// within lease + one heartbeat [default: 5s].
    #[arg(long, env = "DRIP_LEASE", value_parser = parse_duration)]
    pub lease: Option<Duration>,
    /// Redis stores: longest wait for Redis before --on-store-error applies
    /// [default: 1s].
    #[arg(long, env = "DRIP_STORE_TIMEOUT", value_parser = parse_duration)]
    pub store_timeout: Option<Duration>,
    /// Redis stores: what to answer when Redis does not answer: deny (503,
    /// never over-admits), allow (admit, flagged "degraded"), local (a local
    /// bucket with rate and capacity divided by the live nodes; charged to
    /// the shared bucket when Redis returns) [default: deny].
    #[arg(long, env = "DRIP_ON_STORE_ERROR")]
    pub on_store_error: Option<OnStoreError>,
    /// Redis stores: how many refusals the exact local deny cache remembers
    /// (0..=16777216; 0 turns it off). A key refused with "retry after R"
    /// is refused on this node without a Redis call until the bound passes,
    /// exactly as Redis would; a change made on this node reaches it at
    /// once, one made on another node within 100 ms. Each entry takes about
    /// 150 bytes. Example: --deny-cache 0 [default: 65536]
    #[arg(long, env = "DRIP_DENY_CACHE", value_name = "ENTRIES",
          value_parser = clap::value_parser!(u64).range(0..=16_777_216))]
    pub deny_cache: Option<u64>,
    /// Seconds a key's counters (total, allowed, rejected, processed) are
    /// kept after its last request once its bucket is empty, for buckets
    /// that do not set "counter_retention_s"; 0..=2592000, 0 lets them go
    /// with the water. Default: the config file's top-level
    /// counter_retention_s, else 60. Example: --counter-retention 300
    #[arg(long, env = "DRIP_COUNTER_RETENTION", value_name = "SECONDS",
          value_parser = parse_retention, allow_negative_numbers = true)]
    pub counter_retention: Option<Duration>,
    /// Memory store: the most keys held over all buckets, 1..=1000000000.
    /// A new key beyond it is refused (HTTP 503 `key_limit`, gRPC
    /// RESOURCE_EXHAUSTED) while held keys keep deciding; idle keys free
    /// their place when swept. A key costs ~160 bytes. Default: the config
    /// file's top-level max_keys, else 1000000. Example: --max-keys 500000
    #[arg(long, env = "DRIP_MAX_KEYS", value_name = "N", value_parser = crate::key_cap::parse_flag)]
    pub max_keys: Option<usize>,
}

impl Args {
    /// The cluster settings: flag or variable, else the config file, else
    /// the default.
    pub fn cluster_options(&self, file: &ClusterSection) -> Result<ClusterOptions> {
        let d = ClusterOptions::default();
        let pick = |flag: Option<Duration>,
                    name: &str,
                    text: &Option<String>,
                    default: Duration|
         -> Result<Duration> {
            match (flag, text) {
                (Some(v), _) => Ok(v),
                (None, Some(t)) => {
                    parse_duration(t).map_err(|e| anyhow::anyhow!("[cluster] {name}: {e}"))
                }
                (None, None) => Ok(default),
            }
        };
        let options = ClusterOptions {
            heartbeat: pick(self.heartbeat, "heartbeat", &file.heartbeat, d.heartbeat)?,
            member_timeout: pick(
                self.member_timeout,
                "member_timeout",
                &file.member_timeout,
                d.member_timeout,
            )?,
            lease: pick(self.lease, "lease", &file.lease, d.lease)?,
            store_timeout: pick(
                self.store_timeout,
                "store_timeout",
                &file.store_timeout,
                d.store_timeout,
            )?,
            on_store_error: self
                .on_store_error
                .or(file.on_store_error)
                .unwrap_or(d.on_store_error),
            deny_cache: match self.deny_cache.or(file.deny_cache) {
                None => d.deny_cache,
                Some(n @ 0..=16_777_216) => n as usize,
                Some(_) => bail!("[cluster] deny_cache must be an integer in 0..=16777216"),
            },
        };
        options.check().map_err(anyhow::Error::msg)?;
        Ok(options)
    }
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
    /// A Redis server shared by a cluster, or the seed nodes of a Redis
    /// Cluster (several URLs).
    Redis(Vec<String>),
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
            let urls: Vec<String> = s.split(',').map(|u| u.trim().to_owned()).collect();
            if let Some(bad) = urls
                .iter()
                .find(|u| !(u.starts_with("redis://") || u.starts_with("rediss://")))
            {
                return Err(format!(
                    "{bad:?} is not a Redis URL: a Redis Cluster is given as redis://HOST:PORT,redis://HOST:PORT,..."
                ));
            }
            Ok(StoreSpec::Redis(urls))
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
            cluster: Default::default(),
            max_keys: None,
        },
    };
    let max_keys = crate::key_cap::pick(args.max_keys, declared.max_keys);
    let buckets = declared.buckets;
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
    let cluster_options = args.cluster_options(&declared.cluster)?;
    let rls = if args.rls_config.is_empty() {
        None
    } else {
        if args.rls_reload_every.is_zero() {
            bail!("--rls-reload-every must be more than 0 (e.g. 1s or 250ms)");
        }
        Some(crate::rls::RlsHandle::load(crate::rls::RlsOptions {
            paths: args.rls_config.clone(),
            shadow_mode: args.rls_shadow_mode,
            headers: args.rls_headers,
            reload_every: args.rls_reload_every,
        })?)
    };
    let options = Options {
        admin_token: args.admin_token.clone(),
        node_id: args.node_id.clone(),
        counter_retention: declared.counter_retention,
        rls,
        ..Options::default()
    };
    match &args.store {
        StoreSpec::Memory => {
            let store = drip::MemoryStore::with_max_keys(max_keys);
            serve(Limiter::new(store), &args, buckets, options, None).await
        }
        #[cfg(feature = "sqlite")]
        StoreSpec::Sqlite(path) => {
            let store = drip::store::sqlite::SqliteStore::open(path)
                .with_context(|| format!("opening the SQLite store {}", path.display()))?;
            serve(Limiter::new(store), &args, buckets, options, None).await
        }
        #[cfg(not(feature = "sqlite"))]
        StoreSpec::Sqlite(_) => bail!(
            "--store sqlite: is not available in this build: build drip-server with feature \"sqlite\""
        ),
        #[cfg(feature = "redis")]
        StoreSpec::Redis(urls) => {
            crate::cluster::start::serve_redis(urls, &args, buckets, options, cluster_options).await
        }
        #[cfg(not(feature = "redis"))]
        StoreSpec::Redis(_) => bail!(
            "--store redis:// is not available in this build: build drip-server with feature \"redis\""
        ),
    }
}

/// Starts a node's part in the cluster once its listeners are bound, and
/// returns the handle the server reports from and the cluster loop's task
/// (which leaves the cluster when the token is cancelled).
pub type StartCluster = Box<
    dyn FnOnce(
            &Listeners,
            &Options,
            tokio_util::sync::CancellationToken,
        ) -> Result<(crate::cluster::ClusterHandle, tokio::task::JoinHandle<()>)>
        + Send,
>;

/// Configures the file's buckets, binds the listeners, starts the cluster
/// (if any) and serves until a signal.
pub async fn serve<S: Store>(
    limiter: Limiter<S>,
    args: &Args,
    buckets: Vec<(String, drip::Policy)>,
    mut options: Options,
    start_cluster: Option<StartCluster>,
) -> Result<()> {
    for (name, policy) in buckets {
        limiter
            .configure(&name, policy)
            .await
            .with_context(|| format!("configuring bucket {name:?} from the config file"))?;
    }
    if let Some(rls) = &options.rls {
        rls.0.apply(&limiter).await?;
    }
    let listeners = Listeners {
        http: TcpListener::bind(&args.http)
            .await
            .with_context(|| format!("binding the HTTP listener to {}", args.http))?,
        grpc: TcpListener::bind(&args.grpc)
            .await
            .with_context(|| format!("binding the gRPC listener to {}", args.grpc))?,
    };
    // The cluster hears of the signal first: a leader releases its lease
    // at once, before the server drains.
    let stop = tokio_util::sync::CancellationToken::new();
    let mut cluster_task = None;
    if let Some(start) = start_cluster {
        let (handle, task) = start(&listeners, &options, stop.clone())?;
        options.cluster = Some(handle);
        cluster_task = Some(task);
    }
    tokio::spawn({
        let (stop, signal) = (stop.clone(), signal());
        async move {
            signal.await;
            stop.cancel();
        }
    });
    let result = server::run(limiter, listeners, options, stop.clone().cancelled_owned()).await;
    stop.cancel();
    if let Some(task) = cluster_task {
        // Let it finish leaving (bounded by the store timeout it uses).
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    result
}

/// A job to run over a limiter on whichever store `--store` names (the
/// traffic tools: `drip proxy`, `drip shape`).
pub trait WithLimiter {
    /// Runs the job over `limiter`.
    fn run<S: Store>(self, limiter: Limiter<S>) -> impl Future<Output = Result<()>>;
}

/// Opens the store `spec` names (Redis with its default, explicit
/// timeouts) and runs `job` over a limiter on it.
pub async fn with_store(spec: &StoreSpec, job: impl WithLimiter) -> Result<()> {
    with_store_capped(spec, crate::key_cap::DEFAULT_MAX_KEYS, job).await
}

/// [`with_store`] whose memory store holds at most `max_keys` keys.
pub async fn with_store_capped(
    spec: &StoreSpec,
    max_keys: usize,
    job: impl WithLimiter,
) -> Result<()> {
    match spec {
        StoreSpec::Memory => {
            job.run(Limiter::new(drip::MemoryStore::with_max_keys(max_keys)))
                .await
        }
        #[cfg(feature = "sqlite")]
        StoreSpec::Sqlite(path) => {
            let store = drip::store::sqlite::SqliteStore::open(path)
                .with_context(|| format!("opening the SQLite store {}", path.display()))?;
            job.run(Limiter::new(store)).await
        }
        #[cfg(not(feature = "sqlite"))]
        StoreSpec::Sqlite(_) => bail!(
            "--store sqlite: is not available in this build: build drip-server with feature \"sqlite\""
        ),
        #[cfg(feature = "redis")]
        StoreSpec::Redis(urls) => {
            use drip::store::redis::{RedisOptions, RedisStore};
            let store = match urls.as_slice() {
                [url] => RedisStore::connect(url, RedisOptions::default()).await,
                _ => RedisStore::connect_cluster(urls, RedisOptions::default()).await,
            }
            .with_context(|| format!("connecting to the Redis store {}", urls.join(",")))?;
            job.run(Limiter::new(store)).await
        }
        #[cfg(not(feature = "redis"))]
        StoreSpec::Redis(_) => bail!(
            "--store redis:// is not available in this build: build drip-server with feature \"redis\""
        ),
    }
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM. The handlers are
/// installed when this is called, not when the future is first polled: a
/// signal that comes after the call (e.g. right after the "listening" log
/// line) is always seen, never the default action that kills the process.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let int = signal(SignalKind::interrupt()).ok();
        let term = signal(SignalKind::terminate()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(int) => {}
                _ = wait(term) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: Args,
    }

    fn args(argv: &[&str]) -> Args {
        Cmd::try_parse_from(std::iter::once("serve").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn cluster_settings_come_from_flags_then_the_file_then_defaults() {
        let file = ClusterSection {
            heartbeat: Some("200ms".into()),
            lease: Some("2s".into()),
            on_store_error: Some(OnStoreError::Allow),
            ..Default::default()
        };
        let o = args(&["--lease", "4s"]).cluster_options(&file).unwrap();
        assert_eq!(o.heartbeat, Duration::from_millis(200));
        assert_eq!(o.lease, Duration::from_secs(4));
        assert_eq!(o.member_timeout, Duration::from_secs(3));
        assert_eq!(o.on_store_error, OnStoreError::Allow);
        let o = args(&[])
            .cluster_options(&ClusterSection::default())
            .unwrap();
        assert_eq!(
            (o.heartbeat, o.lease, o.on_store_error),
            (
                Duration::from_secs(1),
                Duration::from_secs(5),
                OnStoreError::Deny
            )
        );
        let o = args(&["--on-store-error", "local"])
            .cluster_options(&file)
            .unwrap();
        assert_eq!(o.on_store_error, OnStoreError::Local);
    }

    #[test]
    fn bad_cluster_settings_name_the_flag() {
        let none = ClusterSection::default();
        let e = args(&["--heartbeat", "2s", "--lease", "1s"])
            .cluster_options(&none)
            .unwrap_err();
        assert!(e.to_string().contains("--lease"), "{e}");
        let e = args(&["--member-timeout", "500ms"])
            .cluster_options(&none)
            .unwrap_err();
        assert!(e.to_string().contains("--member-timeout"), "{e}");
        assert!(Cmd::try_parse_from(["serve", "--heartbeat", "soon"]).is_err());
        assert!(Cmd::try_parse_from(["serve", "--on-store-error", "maybe"]).is_err());
        let bad = ClusterSection {
            lease: Some("forever".into()),
            ..Default::default()
        };
        let e = args(&[]).cluster_options(&bad).unwrap_err();
        assert!(e.to_string().contains("[cluster] lease"), "{e}");
    }

    #[test]
    fn several_redis_urls_are_a_redis_cluster() {
        assert_eq!(
            "redis://a:1,redis://b:2".parse::<StoreSpec>(),
            Ok(StoreSpec::Redis(vec![
                "redis://a:1".into(),
                "redis://b:2".into()
            ]))
        );
        assert!("redis://a:1,b:2".parse::<StoreSpec>().is_err());
    }
}
