//! Every etcd call bounded by a timeout, and connecting with the same bound: a stuck etcd
//! shows up as an error the caller retries or reports, never as a hang.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

/// An etcd call that failed or did not finish in time.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// etcd (or the connection to it) answered with an error.
    #[error("etcd {call}: {}", describe(source))]
    Failed {
        /// Which call.
        call: &'static str,
        /// The client's error (boxed: it is large).
        source: Box<etcd_client::Error>,
    },
    /// A stream ended or etcd answered something a session cannot go on with (a cancelled
    /// watch, a reply without a header).
    #[error("etcd {call}: {reason}")]
    Ended {
        /// Which call.
        call: &'static str,
        /// What happened.
        reason: String,
    },
    /// No answer within the timeout.
    #[error("etcd {call} timed out after {after:?}")]
    Timeout {
        /// Which call.
        call: &'static str,
        /// The timeout.
        after: Duration,
    },
}

impl CallError {
    /// A failed call, for errors that arrive outside [`bounded`] (the watch stream).
    pub fn failed(call: &'static str, source: etcd_client::Error) -> CallError {
        CallError::Failed {
            call,
            source: Box::new(source),
        }
    }
}

/// A gRPC status as `code: message` (its Display adds metadata maps nobody can act on).
pub fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        other => other.to_string(),
    }
}

/// Runs one etcd call, giving up after `timeout`.
pub async fn bounded<T>(
    timeout: Duration,
    call: &'static str,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(CallError::failed(call, source)),
        Err(_) => Err(CallError::Timeout {
            call,
            after: timeout,
        }),
    }
}

/// Connects to `endpoints` (`http://host:port`, see [`crate::EtcdAddress`]); the connection
/// and every later request of the client are bounded by `timeout` too.
pub async fn connect(endpoints: &[String], timeout: Duration) -> Result<Client, CallError> {
    let options = ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_timeout(timeout);
    bounded(
        timeout,
        "connect",
        Client::connect(endpoints, Some(options)),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_that_never_answers_times_out() {
        let never = std::future::pending::<Result<(), etcd_client::Error>>();
        let e = bounded(Duration::from_millis(10), "get", never)
            .await
            .unwrap_err();
        assert!(matches!(e, CallError::Timeout { call: "get", .. }));
        assert_eq!(e.to_string(), "etcd get timed out after 10ms");
    }

    #[tokio::test]
    async fn nobody_listening_is_an_error_not_a_hang() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let t = Duration::from_secs(5);
        let endpoints = [format!("http://127.0.0.1:{port}")];
        // The channel connects lazily: the first request reports the refused connection.
        let Ok(mut client) = connect(&endpoints, t).await else {
            return;
        };
        let e = bounded(t, "get", client.get("k", None)).await.unwrap_err();
        assert!(matches!(e, CallError::Failed { call: "get", .. }), "{e}");
    }
}
