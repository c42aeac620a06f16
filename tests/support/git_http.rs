//! Git smart HTTP (`/git/{owner}/{name}.git/...`) served by the real `git http-backend`
//! run as a CGI program, with the request body streamed to its stdin and its stdout
//! streamed back.

use std::process::Stdio;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{StatusCode, header};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::fake::{Shared, header_value, lock};

fn plain(status: StatusCode, text: &str) -> Response {
    let mut response = Response::new(Body::from(text.to_string()));
    *response.status_mut() = status;
    response
}

/// `path` is the request path, already authenticated: `/git/{owner}/{name}.git/{service path}`.
pub(super) async fn serve(shared: &Shared, req: Request, path: &str) -> Response {
    let mut parts = path.trim_start_matches("/git/").splitn(3, '/');
    let (owner, name, service_path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let name = name.strip_suffix(".git").unwrap_or(name);
    let bare = {
        let st = lock(shared);
        st.repo_index(owner, name).map(|i| st.repos[i].bare.clone())
    };
    let (Some(root), Some(dir_name)) = (
        bare.as_ref().and_then(|b| b.parent()),
        bare.as_ref().and_then(|b| b.file_name()),
    ) else {
        return plain(StatusCode::NOT_FOUND, "Repository not found.\n");
    };

    let (parts, body) = req.into_parts();
    let header = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut command = tokio::process::Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env(
            "PATH_INFO",
            format!("/{}/{service_path}", dir_name.to_string_lossy()),
        )
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("CONTENT_TYPE", header(header::CONTENT_TYPE))
        .env("HTTP_CONTENT_ENCODING", header(header::CONTENT_ENCODING))
        .env(
            "HTTP_GIT_PROTOCOL",
            header(header::HeaderName::from_static("git-protocol")),
        )
        .env("REMOTE_USER", "x-access-token")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_COUNT", "2")
        .env("GIT_CONFIG_KEY_0", "http.receivepack")
        .env("GIT_CONFIG_VALUE_0", "true")
        .env("GIT_CONFIG_KEY_1", "safe.directory")
        .env("GIT_CONFIG_VALUE_1", "*")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("spawn git: {e}\n"),
            );
        }
    };
    let (Some(mut stdin), Some(stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "git pipes missing\n");
    };

    // Request body -> CGI stdin (concurrently, so neither side can block the other).
    let mut body = body.into_data_stream();
    tokio::spawn(async move {
        while let Some(Ok(chunk)) = body.next().await {
            if stdin.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        if !text.trim().is_empty() {
            eprintln!("[fake git http-backend] {}", text.trim_end());
        }
    });

    // CGI headers: `Name: value` lines up to a blank line; `Status:` sets the code.
    let mut stdout = BufReader::new(stdout);
    let mut response = Response::new(Body::empty());
    loop {
        let mut line = String::new();
        match stdout.read_line(&mut line).await {
            Ok(0) | Err(_) => return plain(StatusCode::BAD_GATEWAY, "git http-backend failed\n"),
            Ok(_) => {}
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().and_then(|c| c.parse().ok());
            *response.status_mut() = code
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        } else if let Ok(name) = header::HeaderName::from_bytes(name.as_bytes()) {
            response.headers_mut().append(name, header_value(value));
        }
    }

    // CGI stdout -> response body; the child is reaped when its output ends.
    let stream =
        futures_util::stream::unfold((stdout, child), |(mut stdout, mut child)| async move {
            let mut buf = vec![0u8; 64 * 1024];
            match stdout.read(&mut buf).await {
                Ok(n) if n > 0 => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(Bytes::from(buf)), (stdout, child)))
                }
                _ => {
                    let _ = child.wait().await;
                    None
                }
            }
        });
    *response.body_mut() = Body::from_stream(stream);
    response
}
