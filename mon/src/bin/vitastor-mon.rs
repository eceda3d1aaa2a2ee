//! `vitastor-mon`: the monitor daemon. See the `vitastor_mon::daemon` module docs.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;
use vitastor_mon::options::{Cli, MonOptions};
use vitastor_mon::{daemon, http, MonError};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), MonError> {
    let opts = MonOptions::from_cli(cli)?;
    // Two workers: the session loop stays responsive while the LP runs on a blocking thread.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| MonError::Io {
            what: "starting the tokio runtime".into(),
            source,
        })?;
    rt.block_on(async move {
        let metrics = Arc::new(Mutex::new(String::new()));
        if let Some(addr) = opts.prometheus {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| MonError::Io {
                    what: format!("binding the metrics listener on {addr}"),
                    source,
                })?;
            tracing::info!("serving metrics on http://{addr}/metrics");
            tokio::spawn(http::serve(listener, metrics.clone()));
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let signals = [SignalKind::terminate(), SignalKind::interrupt()]
            .into_iter()
            .map(|kind| {
                signal(kind).map_err(|source| MonError::Io {
                    what: "installing a signal handler".into(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for mut s in signals {
            let tx = stop_tx.clone();
            tokio::spawn(async move {
                s.recv().await;
                let _ = tx.send(true);
            });
        }
        tracing::info!(
            "vitastor-mon starting, etcd {:?}, prefix {}",
            opts.endpoints,
            opts.prefix
        );
        daemon::run(opts, metrics, stop_rx).await;
        Ok(())
    })
}
