//! The process's one shutdown tree and the operator's interrupts.
//!
//! Every long-lived task descends from one root [`Shutdown`]: the application (server and
//! simulators), each command, each call take a child token of it, so cancelling a branch stops
//! exactly what hangs from it and cancelling the root stops everything. Tasks that outlive the
//! function that started them are spawned on the root's tracker, so "everything has finished"
//! is something the process waits for at exit, not a timeout it hopes is long enough.

use std::future::Future;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The root of the tree: a token and the tracker of the tasks spawned under it.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tasks: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// A branch of the tree: cancelled with the root, and cancellable on its own.
    pub fn child(&self) -> CancellationToken {
        self.token.child_token()
    }

    /// Spawn a task that the process waits for before it exits.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// Cancel the whole tree and wait for every tracked task to finish.
    pub async fn finish(&self) {
        self.token.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// The operator's Ctrl-C and SIGTERM, one at a time: the first asks politely, the next ones
/// insist. Listening starts when this is made.
#[derive(Debug)]
pub struct Interrupts {
    rx: mpsc::UnboundedReceiver<()>,
    listener: JoinHandle<()>,
}

impl Interrupts {
    pub fn listen() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let listener = tokio::spawn(async move {
            #[cfg(unix)]
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            loop {
                #[cfg(unix)]
                let got = tokio::select! {
                    r = tokio::signal::ctrl_c() => r.is_ok(),
                    Some(()) = async {
                        match term.as_mut() {
                            Some(t) => t.recv().await,
                            None => std::future::pending().await,
                        }
                    } => true,
                };
                #[cfg(not(unix))]
                let got = tokio::signal::ctrl_c().await.is_ok();
                if !got || tx.send(()).is_err() {
                    break;
                }
            }
        });
        Self { rx, listener }
    }

    /// The next interrupt; never resolves when signals cannot be listened to.
    pub async fn next(&mut self) {
        if self.rx.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        // The listener only forwards signals; once nobody listens it has nothing to do.
        self.listener.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn finish_cancels_the_branches_and_waits_for_their_tasks() {
        let root = Shutdown::new();
        let branch = root.child();
        let leaf = branch.child_token();
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        root.spawn(async move {
            leaf.cancelled().await;
            // Work after the signal is still waited for.
            tokio::task::yield_now().await;
            flag.store(true, Ordering::SeqCst);
        });
        root.finish().await;
        assert!(branch.is_cancelled());
        assert!(
            done.load(Ordering::SeqCst),
            "finish returned before the task ended"
        );
    }

    #[tokio::test]
    async fn cancelling_a_branch_leaves_the_root_and_its_siblings() {
        let root = Shutdown::new();
        let a = root.child();
        let b = root.child();
        a.cancel();
        assert!(!b.is_cancelled());
        assert!(!root.token.is_cancelled());
    }
}
