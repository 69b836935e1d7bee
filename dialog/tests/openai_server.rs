//! The OpenAI-compatible streaming client against real servers on loopback: llama-cpp-python's
//! server serving the same Qwen GGUF (when its venv exists: `dialog/scripts/llama_server_venv.sh`),
//! plus failure paths that need a specific server behaviour (nothing listening, a 4xx answer, a
//! server that stalls), produced by small raw-socket servers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use voicerelay_dialog::llm::openai::{OpenAiEngine, OpenAiOptions};
use voicerelay_dialog::{
    ChatMessage, DialogError, FinishReason, GenerateRequest, LlmEngine, LlmEvent,
};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn question() -> GenerateRequest {
    let mut req = GenerateRequest::new(vec![
        ChatMessage::system("You are a helpful assistant. Answer briefly."),
        ChatMessage::user("What is the capital of France? Answer in one word."),
    ]);
    req.max_tokens = 12;
    req
}

fn opts(port: u16) -> OpenAiOptions {
    OpenAiOptions {
        connect_timeout: Duration::from_millis(500),
        read_timeout: Duration::from_millis(800),
        connect_retries: 2,
        retry_backoff: Duration::from_millis(20),
        ..OpenAiOptions::new(format!("http://127.0.0.1:{port}"))
    }
}

#[test]
fn dead_endpoint_fails_fast_with_a_connect_error() {
    let port = free_port(); // bound then released: nothing listens there
    let engine = OpenAiEngine::new(opts(port)).unwrap();
    let t0 = Instant::now();
    let mut gen = engine.generate(question()).unwrap();
    let err = match gen.blocking_next() {
        Some(Err(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    };
    let took = t0.elapsed();
    println!("dead endpoint: {err} after {took:?}");
    assert!(
        matches!(err, DialogError::Connect { attempts: 3, .. }),
        "{err:?}"
    );
    assert!(err.is_unreachable());
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    // 20 ms + 40 ms of backoff plus three refused connects.
    assert!(
        took >= Duration::from_millis(60) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(gen.blocking_next().is_none());
}

/// Serves one connection: reads the request head and body, then runs `respond`.
fn one_shot_server(respond: impl FnOnce(TcpStream, String) + Send + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).unwrap();
        respond(stream, String::from_utf8(body).unwrap());
    });
    port
}

#[test]
fn client_error_reports_status_and_server_message() {
    let port = one_shot_server(|mut s, body| {
        assert!(body.contains("\"stream\":true"), "{body}");
        let msg = r#"{"error":{"message":"The model `nope` does not exist.","type":"invalid_request_error"}}"#;
        write!(s, "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{msg}", msg.len()).unwrap();
    });
    let engine = OpenAiEngine::new(opts(port)).unwrap();
    let err = engine
        .generate(question())
        .unwrap()
        .blocking_next()
        .unwrap()
        .unwrap_err();
    println!("4xx: {err}");
    match &err {
        DialogError::HttpStatus {
            status, message, ..
        } => {
            assert_eq!(*status, 404);
            assert_eq!(message, "The model `nope` does not exist.");
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_unreachable());
}

const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

fn chunk(s: &mut TcpStream, data: &str) {
    write!(s, "{:x}\r\n{data}\r\n", data.len()).unwrap();
    s.flush().unwrap();
}

#[test]
fn stalled_stream_times_out_and_cancel_drops_the_connection() {
    // Stall after one token: the read timeout ends the stream with a clear error.
    let port = one_shot_server(|mut s, _| {
        s.write_all(SSE_HEAD.as_bytes()).unwrap();
        chunk(
            &mut s,
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
        );
        std::thread::sleep(Duration::from_secs(3));
    });
    let engine = OpenAiEngine::new(opts(port)).unwrap();
    let mut gen = engine.generate(question()).unwrap();
    assert!(matches!(gen.blocking_next(), Some(Ok(LlmEvent::Token(t))) if t.text == "Hel"));
    let t0 = Instant::now();
    let err = gen.blocking_next().unwrap().unwrap_err();
    println!("stall: {err} after {:?}", t0.elapsed());
    assert!(
        matches!(
            err,
            DialogError::Timeout {
                phase: "stream chunk",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(2));

    // Cancel while the server is stalled: the stream ends at once and the server sees the
    // connection close (so a real server stops generating).
    let (closed_tx, closed_rx) = std::sync::mpsc::channel();
    let port = one_shot_server(move |mut s, _| {
        s.write_all(SSE_HEAD.as_bytes()).unwrap();
        chunk(
            &mut s,
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n",
        );
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 16];
        let t0 = Instant::now();
        let closed = matches!(s.read(&mut buf), Ok(0));
        closed_tx.send((closed, t0.elapsed())).unwrap();
    });
    let engine = OpenAiEngine::new(OpenAiOptions {
        read_timeout: Duration::from_secs(10),
        ..opts(port)
    })
    .unwrap();
    let mut gen = engine.generate(question()).unwrap();
    assert!(matches!(gen.blocking_next(), Some(Ok(LlmEvent::Token(_)))));
    gen.cancel();
    assert!(gen.blocking_next().is_none());
    let (closed, after) = closed_rx.recv_timeout(Duration::from_secs(6)).unwrap();
    println!("cancel: server saw close={closed} after {after:?}");
    assert!(closed && after < Duration::from_secs(2));
}

fn llama_venv() -> PathBuf {
    std::env::var_os("VOICERELAY_LLAMA_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/voicerelay/venvs/llama-server")
        })
}

/// Kills the server however the test ends.
struct ServerGuard(Child);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn streams_from_a_real_llama_cpp_server() {
    let python = llama_venv().join("bin/python");
    let ready_marker = std::fs::read_dir(llama_venv()).ok().and_then(|mut d| {
        d.find(|e| {
            e.as_ref().is_ok_and(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".voicerelay-ok")
            })
        })
    });
    if !python.exists() || ready_marker.is_none() {
        vr_core::prereq::missing(format_args!(
            "no llama-cpp-python venv at {} (create it with dialog/scripts/llama_server_venv.sh)",
            llama_venv().display()
        ));
        return;
    }
    let store = vr_core::ModelStore::from_env().unwrap();
    let gguf = store.file("qwen2.5-0.5b", "model.gguf").unwrap();
    let port = free_port();
    let log = std::env::temp_dir().join(format!("llama-server-{port}.log"));
    let child = Command::new(&python)
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(&gguf)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--n_ctx",
            "2048",
            "--n_threads",
            "2",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start llama_cpp.server");
    let mut server = ServerGuard(child);
    // Ready when it accepts connections and answers /v1/models; bounded.
    let t0 = Instant::now();
    loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!(
                "llama_cpp.server exited with {status}; log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = write!(
                s,
                "GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
            );
            let mut head = [0u8; 12];
            if s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200") {
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "server not ready in 120 s; log: {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    println!("llama_cpp.server ready on :{port} after {:?}", t0.elapsed());

    let engine = OpenAiEngine::new(OpenAiOptions {
        read_timeout: Duration::from_secs(60),
        ..opts(port)
    })
    .unwrap();
    let (text, tokens, fin) = engine
        .generate(question())
        .unwrap()
        .blocking_collect()
        .unwrap();
    let fin = fin.expect("finished");
    let with_features = tokens.iter().filter(|t| t.features.is_some()).count();
    println!(
        "llama.cpp answer {text:?}: {} tokens ({with_features} with logprobs), {:?}",
        tokens.len(),
        fin
    );
    assert!(!text.trim().is_empty());
    assert!(!tokens.is_empty() && tokens.len() <= 12);
    assert_eq!(fin.stats.generated_tokens, tokens.len());
    assert!(matches!(
        fin.reason,
        FinishReason::Stop | FinishReason::Length
    ));
    assert!(text.contains("Paris"), "{text:?}");
    for f in tokens.iter().filter_map(|t| t.features.as_ref()) {
        assert!(f.logprob <= 0.0 && f.margin.unwrap_or(0.0) >= 0.0, "{f:?}");
    }
    // Cancelling a long answer mid-stream.
    let mut req = question();
    req.messages[1].content = "Tell me a long story about a dragon.".into();
    req.max_tokens = 300;
    let mut gen = engine.generate(req).unwrap();
    let mut n = 0;
    while let Some(ev) = gen.blocking_next() {
        if let LlmEvent::Token(_) = ev.unwrap() {
            n += 1;
            if n == 2 {
                gen.cancel();
            }
        }
    }
    assert_eq!(n, 2);
}
