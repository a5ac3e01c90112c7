//! Two str0m peers on loopback, no server: gather, offer/answer handed over directly, a file
//! sent over the data channel and compared.

use std::time::Duration;

use switchboard_transfer::files::{self, Output};
use switchboard_transfer::peer::{gather, PeerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_move_a_file_on_loopback() {
    let cfg = PeerConfig {
        host_ips: vec!["127.0.0.1".parse().unwrap()],
        ..PeerConfig::default()
    };
    let dir = std::env::temp_dir().join(format!("sb-transfer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("in")).unwrap();
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i * 7 + i / 1000) as u8)
        .collect();
    std::fs::write(dir.join("in/data.bin"), &data).unwrap();

    let mut offerer = gather(&cfg).await.unwrap();
    let mut answerer = gather(&cfg).await.unwrap();
    let offer = offerer.offer().unwrap();
    let answer = answerer.accept_offer(&offer).unwrap();
    offerer.accept_answer(&answer).unwrap();
    let mut rx_link = offerer.start();
    let mut tx_link = answerer.start();

    let sources = files::collect(&[dir.join("in/data.bin")], "stdin").unwrap();
    let out = Output::Dir {
        dir: dir.join("out"),
        overwrite: false,
        resume: true,
    };
    let send = async {
        files::opened(&mut tx_link).await.unwrap();
        files::send(&mut tx_link, sources, &mut |_| {}).await
    };
    let recv = async {
        files::opened(&mut rx_link).await.unwrap();
        files::receive(&mut rx_link, &out, &mut |_| {}).await
    };
    let (s, r) = tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(send, recv) })
        .await
        .expect("transfer in time");
    assert_eq!(s.unwrap(), data.len() as u64);
    assert_eq!(r.unwrap(), data.len() as u64);
    assert_eq!(std::fs::read(dir.join("out/data.bin")).unwrap(), data);
    let _ = std::fs::remove_dir_all(&dir);
}
