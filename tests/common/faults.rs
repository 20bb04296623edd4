//! A TCP proxy in front of a mock server that resets the first connections, to test
//! what a client does when the network drops a request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};

pub struct ResetProxy {
    pub addr: SocketAddr,
    pub resets: Arc<AtomicUsize>,
}

impl ResetProxy {
    /// Forwards to `upstream`, resetting (RST) the first `reset_first` connections.
    pub async fn start(upstream: SocketAddr, reset_first: usize) -> ResetProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let resets = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&resets);
        tokio::spawn(async move {
            let mut seen = 0usize;
            while let Ok((mut client, _)) = listener.accept().await {
                seen += 1;
                if seen <= reset_first {
                    counter.fetch_add(1, Ordering::SeqCst);
                    // Wait for the request, then reset: the client sees the connection drop.
                    let mut buf = [0u8; 1024];
                    let _ = client.readable().await;
                    let _ = client.try_read(&mut buf);
                    let _ = client.set_zero_linger();
                    drop(client);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        ResetProxy { addr, resets }
    }
}
