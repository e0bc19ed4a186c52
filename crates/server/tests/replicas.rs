//! Several replicas on one shared store (S3 on a real Garage, state in a
//! real PostgreSQL): real clients through a round-robin balancer, an upload
//! that moves between replicas, and an API key revoked on one replica and
//! refused on the others at once. These tests start the shared store
//! whatever the mode of the run.

mod common;

use common::spread::RoundRobin;
use common::*;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn replicas(extra: &str) -> Vec<Server> {
    let first = Server::start_shared(extra);
    let second = first.replica();
    let third = first.replica();
    vec![first, second, third]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_behind_round_robin_serve_one_registry() {
    let rs = replicas("");
    let lb = RoundRobin::start(&rs.iter().map(|s| s.base.clone()).collect::<Vec<_>>()).await;
    let work = tempfile::tempdir().unwrap();
    let auth = work.path().join("auth.json");
    std::fs::write(&auth, "{}").unwrap();
    let host = lb.host();
    let skopeo = |args: &[&str]| {
        let mut c = Command::new("skopeo");
        c.env("REGISTRY_AUTH_FILE", &auth).args(args);
        c
    };
    // skopeo's requests of one push (blob uploads, chunks, the manifest)
    // land on the replicas in turn.
    let single = work.path().join("single");
    let d1 = layout::single(&single, "v1", 21);
    run(&mut skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", single.display()),
        &format!("docker://{host}/team/app:v1"),
    ]));
    let multi = work.path().join("multi");
    let d2 = layout::multi(&multi, "v2", 23);
    run(&mut skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:v2", multi.display()),
        &format!("docker://{host}/team/app:v2"),
    ]));
    assert!(
        lb.counts().iter().all(|&n| n > 5),
        "every replica took part: {:?}",
        lb.counts()
    );
    // Pulled back through the balancer, byte for byte.
    let out = work.path().join("out");
    run(&mut skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{host}/team/app:v2"),
        &format!("oci:{}:v2", out.display()),
    ]));
    for (tag, digest) in [("v1", &d1), ("v2", &d2)] {
        let raw = run(&mut skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{host}/team/app:{tag}"),
        ]));
        assert_eq!(&sha256(raw.as_bytes()), digest);
    }
    // Every replica answers for all of it: tags at once, the catalog
    // within its refresh interval (5 s, plus one walk).
    for s in &rs {
        let tags = s.get("/v2/team/app/tags/list").await.json_body().await;
        assert_eq!(tags["tags"], serde_json::json!(["v1", "v2"]));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let c = s.get("/v2/_catalog").await.json_body().await;
            if c["repositories"] == serde_json::json!(["team/app"]) {
                break;
            }
            assert!(Instant::now() < deadline, "catalog of {}: {c}", s.base);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upload_moves_between_replicas() {
    let rs = replicas("");
    let data = bytes(31, 20_000_000);
    let digest = sha256(&data);
    // Started on the first replica...
    let r = rs[0]
        .send(
            Method::POST,
            "/v2/moving/blob/blobs/uploads/",
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = location(&r);
    // ...its first chunk on the second, its status asked of the third...
    let first = 9_000_000;
    let r = rs[1]
        .send(
            Method::PATCH,
            &loc,
            &[("content-range", &format!("0-{}", first - 1))],
            data[..first].to_vec(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", rs[1].log());
    let r = rs[2].get(&loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), format!("0-{}", first - 1));
    // ...a chunk out of order refused by the first, the rest accepted
    // there, and the upload finished on the third.
    let r = rs[0]
        .send(
            Method::PATCH,
            &loc,
            &[("content-range", "100-199")],
            data[100..200].to_vec(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let r = rs[0]
        .send(
            Method::PATCH,
            &loc,
            &[("content-range", &format!("{first}-{}", data.len() - 1))],
            data[first..].to_vec(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = rs[2].finish_upload(&loc, &digest).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", rs[2].log());
    for s in &rs {
        assert!(s.blob("moving/blob", &digest).await == data, "{}", s.base);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_revoked_on_one_replica_is_refused_on_every_other_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    write_htpasswd(&path, &[("ci", "ci-pw")]);
    let rs = replicas(&format!(
        r#","http":{{"address":"127.0.0.1","port":"0",
        "auth":{{"htpasswd":{{"path":{:?}}},"apikey":true}},
        "accessControl":{{"repositories":{{"**":{{"policies":[{{"users":["ci"],"actions":["read","create"]}}]}}}}}}}}"#,
        path.display().to_string()
    ));
    // Minted on the first replica.
    rs[0].login(Some("ci:ci-pw"));
    let r = rs[0]
        .send(
            Method::POST,
            "/zot/auth/apikey",
            &[("content-type", "application/json")],
            br#"{"label":"ci"}"#.to_vec(),
        )
        .await;
    let minted = expect_status(r, StatusCode::CREATED)
        .await
        .json_body()
        .await;
    let key = minted["apiKey"].as_str().unwrap().to_owned();
    let id = minted["uuid"].as_str().unwrap().to_owned();
    // Accepted by the others at once.
    for s in &rs[1..] {
        s.login(Some(&format!("ci:{key}")));
        assert_eq!(s.get("/v2/").await.status(), StatusCode::OK, "{}", s.base);
    }
    // Revoked on the third...
    rs[2].login(Some("ci:ci-pw"));
    let r = rs[2].delete(&format!("/zot/auth/apikey?id={id}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    // ...and refused by every replica on the next request.
    for s in &rs {
        s.login(Some(&format!("ci:{key}")));
        assert_eq!(
            s.get("/v2/").await.status(),
            StatusCode::UNAUTHORIZED,
            "{}",
            s.base
        );
    }
}

/// `berth verify` of a configuration with these `storage` keys.
fn verify(keys: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"storage":{{"rootDirectory":{:?}{keys}}}}}"#,
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("verify")
        .arg(&config)
        .output()
        .unwrap()
}

#[test]
fn verify_opens_the_shared_store_as_serve_does() {
    let s = Server::start_shared("");
    let out = verify(s.storage_keys());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing listens there: refused, as serve would refuse to start.
    let dead = format!("postgres://berth@127.0.0.1:{}/x", free_port());
    let unreachable = s
        .storage_keys()
        .split(r#""url":""#)
        .next()
        .unwrap()
        .to_owned()
        + &format!(r#""url":"{dead}"}}"#);
    let out = verify(&unreachable);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("storage"), "{err}");
    // Wrong S3 credentials: refused too.
    let wrong = s
        .storage_keys()
        .replace(berth_storage::garage_harness::SECRET, &"f".repeat(64));
    let out = verify(&wrong);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_talks_to_postgresql_over_verified_tls_only() {
    // A PostgreSQL that takes TCP connections over TLS alone.
    let (pg, ca) = berth_storage::pg_harness::Postgres::start_tls();
    let options = format!("?sslmode=verify-full&sslrootcert={}", ca.display());
    let backends = SharedBackends::with_url_options(
        pg,
        berth_storage::garage_harness::Garage::start(),
        &options,
    );
    let s = Server::start_shared_on("", backends);
    let (manifest, digest) = s.push_image("tls/app", "v1", 61, 2).await;
    let r = s.get("/v2/tls/app/manifests/v1").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-content-digest"), digest);
    assert_eq!(r.bytes().await.unwrap(), manifest);
    // Without the CA the certificate is not trusted: `verify` refuses,
    // as `serve` would (the system's roots do not know the test's CA).
    let out = verify(s.storage_keys());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ca_path = ca.display().to_string();
    let untrusted = s
        .storage_keys()
        .replace(&format!("&sslrootcert={ca_path}"), "");
    assert_ne!(untrusted, s.storage_keys());
    let out = verify(&untrusted);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Plain TCP is refused by this server.
    let plain = s
        .storage_keys()
        .replace(&format!("?sslmode=verify-full&sslrootcert={ca_path}"), "");
    let out = verify(&plain);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// What a push put where: its repository, manifest and blobs.
type Pushed = (String, Vec<u8>, Vec<Vec<u8>>);

/// One push over plain HTTP that reports failure instead of panicking (its
/// replica may be killed under it): a blob, a config, a manifest tagged
/// `p{i}`. `Some` only when every step was acknowledged.
/// With `hold`, the layer's body stops halfway (counted in `hold.0`) until
/// `hold.1` says the replica was killed: a push caught in the middle.
async fn try_push(
    base: &str,
    i: usize,
    hold: Option<(
        Arc<std::sync::atomic::AtomicUsize>,
        tokio::sync::watch::Receiver<bool>,
    )>,
) -> Option<Pushed> {
    let client = reqwest::Client::new();
    let repo = format!("load/p{}", i % 5);
    let layer = bytes(1000 + i as u64, 300_000 + 7919 * i);
    let config = format!(r#"{{"architecture":"amd64","os":"linux","n":{i}}}"#).into_bytes();
    for (n, data) in [&layer, &config].into_iter().enumerate() {
        let r = client
            .post(format!("{base}/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .ok()?;
        if r.status() != StatusCode::ACCEPTED {
            return None;
        }
        let loc = location(&r);
        let url = if loc.starts_with("http") {
            loc
        } else {
            format!("{base}{loc}")
        };
        let body = match (&hold, n) {
            (Some((halfway, killed)), 0) => {
                let (first, rest) = data.split_at(data.len() / 2);
                let (first, rest) = (first.to_vec(), rest.to_vec());
                let (halfway, killed) = (halfway.clone(), killed.clone());
                let pieces = futures_util::stream::iter([0, 1]).then(move |k| {
                    let (first, rest) = (first.clone(), rest.clone());
                    let halfway = halfway.clone();
                    let mut killed = killed.clone();
                    async move {
                        if k == 0 {
                            return Ok::<_, std::io::Error>(first);
                        }
                        halfway.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let _ = killed.wait_for(|k| *k).await;
                        Ok(rest)
                    }
                });
                reqwest::Body::wrap_stream(pieces)
            }
            _ => reqwest::Body::from(data.clone()),
        };
        let r = client
            .put(with_query(&url, &format!("digest={}", sha256(data))))
            .header("content-length", data.len())
            .body(body)
            .send()
            .await
            .ok()?;
        if r.status() != StatusCode::CREATED {
            return None;
        }
    }
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":{}}},"layers":[{{"mediaType":"{OCI_LAYER}","digest":"{}","size":{}}}]}}"#,
        sha256(&config),
        config.len(),
        sha256(&layer),
        layer.len()
    );
    let r = client
        .put(format!("{base}/v2/{repo}/manifests/p{i}"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .ok()?;
    (r.status() == StatusCode::CREATED).then(|| (repo, manifest.into_bytes(), vec![layer, config]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_fifty_pushes_loses_nothing_acknowledged() {
    let rs = replicas("");
    let victim = rs[0].pid();
    let acked = std::sync::atomic::AtomicUsize::new(0);
    // The first replica's pushes stop halfway through their layer until it
    // is killed: each of them is caught in the middle, by construction.
    let halfway = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (killed_tx, killed_rx) = tokio::sync::watch::channel(false);
    let on_victim = (0..50).filter(|i| i % 3 == 0).count();
    let pushes = (0..50).map(|i| {
        let base = rs[i % 3].base.clone();
        let hold = (i % 3 == 0).then(|| (halfway.clone(), killed_rx.clone()));
        let acked = &acked;
        async move {
            let got = try_push(&base, i, hold).await;
            if got.is_some() {
                acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            (i, got)
        }
    });
    // SIGKILL the first replica once every push to it is halfway and some
    // pushes to the others were acknowledged (the rest are under way).
    let killer = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        while (halfway.load(std::sync::atomic::Ordering::SeqCst) < on_victim
            || acked.load(std::sync::atomic::Ordering::SeqCst) < 8)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(victim as libc::pid_t, libc::SIGKILL) };
        let _ = killed_tx.send(true);
    };
    let (results, ()) = tokio::join!(futures_util::future::join_all(pushes), killer);
    let ok: Vec<_> = results
        .iter()
        .filter_map(|(i, r)| r.as_ref().map(|r| (*i, r)))
        .collect();
    let lost_to_kill = results
        .iter()
        .filter(|(i, r)| r.is_none() && i % 3 == 0)
        .count();
    assert_eq!(
        ok.len(),
        50 - on_victim,
        "the survivors' pushes all succeed"
    );
    assert_eq!(
        lost_to_kill, on_victim,
        "every push to the killed replica was cut"
    );
    // Every acknowledged push reads back whole from every survivor.
    for s in &rs[1..] {
        all_read_back(s, &ok).await;
    }
    // Nothing partial is visible: whatever a killed push left that is
    // served at all is served whole.
    let s = &rs[1];
    for (i, r) in &results {
        if r.is_some() {
            continue;
        }
        let repo = format!("load/p{}", i % 5);
        let m = s.get(&format!("/v2/{repo}/manifests/p{i}")).await;
        if m.status() == StatusCode::OK {
            let body = m.bytes().await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            for d in [&v["config"]["digest"], &v["layers"][0]["digest"]] {
                let d = d.as_str().unwrap();
                assert_eq!(sha256(&s.blob(&repo, d).await), d);
            }
        }
        let layer = bytes(1000 + *i as u64, 300_000 + 7919 * i);
        let d = sha256(&layer);
        let h = s.head(&format!("/v2/{repo}/blobs/{d}")).await;
        if h.status() == StatusCode::OK {
            assert!(
                s.blob(&repo, &d).await == layer,
                "a partial blob of p{i} is served"
            );
        }
    }
}

/// `berth migrate`: a store moves from the filesystem to the shared store
/// and back, resumably, and serves the same images after each move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_moves_to_the_shared_store_and_back() {
    let mut local = Server::start_local("");
    let (m1, d1) = local.push_image("moved/app", "v1", 41, 2).await;
    let (m2, d2) = local.push_image("moved/app/tools", "t1", 43, 3).await;
    local.kill();
    let mut shared = Server::start_shared("");
    shared.kill();
    let migrate = |from: &Server, to: &Server| {
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("migrate")
            .arg("--from")
            .arg(from.config_path())
            .arg("--to")
            .arg(to.config_path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let first = migrate(&local, &shared);
    assert!(
        first.contains("already there") && !first.contains("copied 0 objects"),
        "{first}"
    );
    let copied: usize = first
        .split("copied ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        first.contains(&format!("verified: {copied} objects")),
        "{first}"
    );
    // Run again, it finds everything there.
    let again = migrate(&local, &shared);
    assert!(again.contains("copied 0 objects"), "{again}");
    assert!(
        again.contains(&format!("{copied} already there")),
        "{again}"
    );
    shared.restart();
    let images = [
        ("moved/app", "v1", m1, d1),
        ("moved/app/tools", "t1", m2, d2),
    ];
    same_images(&shared, &images).await;
    shared.kill();
    // And back to another filesystem store.
    let mut back = Server::start_local("");
    back.kill();
    migrate(&shared, &back);
    back.restart();
    same_images(&back, &images).await;
}

/// The server serves exactly these images (repository, tag, manifest,
/// digest), and no other repository.
async fn same_images(s: &Server, images: &[(&str, &str, Vec<u8>, String)]) {
    for (repo, tag, m, d) in images {
        let r = s.get(&format!("/v2/{repo}/manifests/{tag}")).await;
        assert_eq!(header(&r, "docker-content-digest"), *d);
        assert_eq!(r.bytes().await.unwrap().to_vec(), *m);
        let v: serde_json::Value = serde_json::from_slice(m).unwrap();
        for l in v["layers"].as_array().unwrap().iter().chain([&v["config"]]) {
            let ld = l["digest"].as_str().unwrap();
            assert_eq!(sha256(&s.blob(repo, ld).await), ld);
        }
    }
    let c = s.get("/v2/_catalog").await.json_body().await;
    let names: Vec<&str> = images.iter().map(|i| i.0).collect();
    assert_eq!(c["repositories"], serde_json::json!(names));
}

/// A Garage node (of three, each holding every object) killed in the
/// middle of 30 concurrent pushes over two replicas: every push that got
/// its 201 reads back whole from both replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garage_node_killed_under_pushes_loses_nothing_acknowledged() {
    let backends = SharedBackends::new(
        berth_storage::pg_harness::Postgres::start(),
        berth_storage::garage_harness::Garage::cluster(3),
    );
    let first = Server::start_shared_on("", backends.clone());
    let rs = [first.replica(), first];
    let acked = std::sync::atomic::AtomicUsize::new(0);
    let pushes = (0..30).map(|i| {
        let base = rs[i % 2].base.clone();
        let acked = &acked;
        async move {
            let got = try_push(&base, 100 + i, None).await;
            if got.is_some() {
                acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            (100 + i, got)
        }
    });
    let killer = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.load(std::sync::atomic::Ordering::SeqCst) < 5 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A storage node, not the one the replicas send requests to.
        backends.garage.kill_node(2);
    };
    let (results, ()) = tokio::join!(futures_util::future::join_all(pushes), killer);
    let ok: Vec<_> = results
        .iter()
        .filter_map(|(i, r)| r.as_ref().map(|r| (*i, r)))
        .collect();
    // A quorum of two survives: pushes go on (a few may fail while the
    // survivors notice).
    assert!(ok.len() >= 25, "only {} of 30 pushes succeeded", ok.len());
    for s in &rs {
        all_read_back(s, &ok).await;
    }
    // And the registry still takes pushes with the node gone.
    assert!(try_push(&rs[0].base, 200, None).await.is_some());
}

/// Every acknowledged push (its number, repository, manifest and blobs)
/// reads back whole from `s`.
async fn all_read_back(s: &Server, ok: &[(usize, &Pushed)]) {
    for (i, (repo, manifest, blobs)) in ok {
        let r = s.get(&format!("/v2/{repo}/manifests/p{i}")).await;
        assert_eq!(r.status(), StatusCode::OK, "p{i} on {}", s.base);
        assert_eq!(r.bytes().await.unwrap().to_vec(), *manifest);
        for b in blobs {
            assert!(s.blob(repo, &sha256(b)).await == *b, "p{i} blob");
        }
    }
}

/// Two replicas collecting garbage every 100 ms with a 4 s grace delay
/// while 30 pushes go on through both: every acknowledged push reads back
/// whole, right after and after passes that find its content old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_collecting_while_pushes_go_on_lose_nothing_acknowledged() {
    let first = Server::start_shared(
        r#","storage":{"rootDirectory":@ROOT@@SHARED@,"gc":true,"gcDelay":"4s","gcInterval":"100ms"}"#,
    );
    let rs = [first.replica(), first];
    // A blob nothing will reference: the collectors must take it.
    let lone = rs[0].push_blob("gc/lone", &bytes(999, 5000)).await;
    let pushes = (0..30).map(|i| {
        let base = rs[i % 2].base.clone();
        async move { (300 + i, try_push(&base, 300 + i, None).await) }
    });
    let results = futures_util::future::join_all(pushes).await;
    let ok: Vec<_> = results
        .iter()
        .filter_map(|(i, r)| r.as_ref().map(|r| (*i, r)))
        .collect();
    // A pass may take a blob pushed longer than the delay before its
    // manifest (that push is refused, not acknowledged); most go through.
    assert!(
        ok.len() >= 10,
        "only {} of 30 pushes were acknowledged",
        ok.len()
    );
    for s in &rs {
        all_read_back(s, &ok).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    for s in &rs {
        all_read_back(s, &ok).await;
        let r = s.head(&format!("/v2/gc/lone/blobs/{lone}")).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "the collectors ran");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_missing_one_blob_together_fetch_it_from_upstream_once() {
    let upstream = Server::start_local("");
    let blob = bytes(41, 24 << 20);
    let digest = upstream.push_blob("up/app", &blob).await;
    // The upstream behind a proxy that counts what it is asked.
    let counter = RoundRobin::start(std::slice::from_ref(&upstream.base)).await;
    let rs = replicas(&format!(
        r#","extensions":{{"sync":{{"enable":true,"registries":[{{"urls":["{}"],"onDemand":true,"maxRetries":1,"retryDelay":"100ms"}}]}}}}"#,
        counter.url
    ));
    // Two clients on each replica ask at once.
    let path = format!("/v2/up/app/blobs/{digest}");
    let gets = rs.iter().flat_map(|s| [s, s]).map(|s| {
        let path = path.clone();
        async move {
            let r = s.get(&path).await;
            assert_eq!(r.status(), StatusCode::OK, "from {}", s.base);
            sha256(&r.bytes().await.unwrap())
        }
    });
    for got in futures_util::future::join_all(gets).await {
        assert_eq!(got, digest);
    }
    assert_eq!(
        counter.seen("GET", &path),
        1,
        "one fetch from upstream among three replicas"
    );
    // Stored once, served by each replica from the shared store.
    for s in &rs {
        let r = s.get(&path).await;
        assert_eq!(sha256(&r.bytes().await.unwrap()), digest);
    }
    assert_eq!(counter.seen("GET", &path), 1);
    // A nested repository's claim first, then its parent's: claims of
    // one blob under both names do not get in each other's way.
    let small = bytes(42, 4096);
    let d = upstream.push_blob("up/lib/x", &small).await;
    upstream.push_blob("up/lib", &small).await;
    for repo in ["up/lib/x", "up/lib"] {
        let r = rs[0].get(&format!("/v2/{repo}/blobs/{d}")).await;
        assert_eq!(r.status(), StatusCode::OK, "{repo}");
        assert_eq!(sha256(&r.bytes().await.unwrap()), d);
    }
}
