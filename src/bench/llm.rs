//! `agent-runner bench llm`: our OpenAI-compatible client against raw HTTP requests with
//! the same body, on a real server (llama.cpp, vLLM, Ollama), streaming and not.
//!
//! Both sides run interleaved, request by request, at temperature 0, so server load and
//! caching hit them alike. It also checks the token accounting: the usage our client
//! reports must be the server's own count for the same request.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::{Comparison, percentiles};
use crate::config::LlmConfig;
use crate::llm::{self, Message, Usage};

/// Our client may add this much over a raw request (p50 and p95).
const CLIENT_TARGET: f64 = 1.1;

#[derive(Debug, clap::Args)]
pub struct LlmBenchArgs {
    /// The server's OpenAI-compatible API root, e.g. http://127.0.0.1:8080/v1.
    #[arg(long)]
    pub base_url: String,
    /// The model name the server knows.
    #[arg(long)]
    pub model: String,
    /// Measured requests of each kind (after one warm-up).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub iterations: u32,
    /// Completion tokens per request.
    #[arg(long, default_value_t = 32)]
    pub max_tokens: u32,
}

fn messages() -> Vec<Message> {
    vec![
        Message::system("You are a terse assistant."),
        Message::user("Name three prime numbers."),
    ]
}

/// The body our client sends, as plain JSON.
fn raw_body(args: &LlmBenchArgs, stream: bool) -> Value {
    let mut body = json!({
        "model": args.model,
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Name three prime numbers."}
        ],
        "max_completion_tokens": args.max_tokens,
        "temperature": 0.0,
        "stream": stream,
    });
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// One raw request; returns its wall time and the usage the server reported.
async fn raw_request(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
) -> anyhow::Result<(Duration, Usage)> {
    let started = Instant::now();
    let response = http
        .post(url)
        .json(body)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let text = response.text().await?;
    let took = started.elapsed();
    if !status.is_success() {
        bail!("{url} answered {status}: {}", text.trim());
    }
    Ok((took, usage_of(&text)))
}

/// The usage of a JSON reply, or of the last SSE chunk that carries one.
fn usage_of(text: &str) -> Usage {
    let from = |v: &Value| Usage {
        prompt_tokens: v["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
        completion_tokens: v["usage"]["completion_tokens"].as_u64().unwrap_or(0),
    };
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return from(&v);
    }
    text.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v["usage"].is_object())
        .map(|v| from(&v))
        .unwrap_or_default()
}

pub async fn run(args: LlmBenchArgs) -> anyhow::Result<()> {
    let base = args.base_url.trim_end_matches('/').to_string();
    let url = format!("{base}/chat/completions");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    let config = |stream: bool| LlmConfig {
        provider: "openai".into(),
        base_url: base.clone(),
        model: args.model.clone(),
        max_output_tokens: args.max_tokens,
        temperature: 0.0,
        stream,
        ..LlmConfig::default()
    };
    let plain = llm::from_config(&config(false))?;
    let streaming = llm::from_config(&config(true))?;
    let (body, body_stream) = (raw_body(&args, false), raw_body(&args, true));
    let asked = messages();

    let n = args.iterations as usize;
    let mut samples: [Vec<Duration>; 4] = Default::default();
    let mut accounting: Vec<String> = Vec::new();
    let mut generated = (0u64, Duration::ZERO);
    for i in 0..=n {
        let (raw_took, raw_usage) = raw_request(&http, &url, &body).await?;
        let t = Instant::now();
        let ours = plain.complete(&asked, &[]).await?;
        let ours_took = t.elapsed();
        let (raw_stream_took, raw_stream_usage) = raw_request(&http, &url, &body_stream).await?;
        let t = Instant::now();
        let ours_stream = streaming.complete(&asked, &[]).await?;
        let ours_stream_took = t.elapsed();
        if i == 0 {
            continue; // warm-up: the server's prompt cache and our connection pool
        }
        for (kind, ours, raw) in [
            ("plain", &ours.usage, &raw_usage),
            ("streaming", &ours_stream.usage, &raw_stream_usage),
        ] {
            if ours != raw {
                accounting.push(format!(
                    "{kind} request {i}: ours {}+{} tokens, server {}+{}",
                    ours.prompt_tokens,
                    ours.completion_tokens,
                    raw.prompt_tokens,
                    raw.completion_tokens
                ));
            }
        }
        generated.0 += ours_stream.usage.completion_tokens;
        generated.1 += ours_stream_took;
        for (slot, took) in [raw_took, ours_took, raw_stream_took, ours_stream_took]
            .into_iter()
            .enumerate()
        {
            samples[slot].push(took);
        }
    }
    let [raw, ours, raw_stream, ours_stream] = samples;
    let rows = [
        Comparison {
            what: "chat completion",
            ours_label: "OpenAiModel (stream = false)",
            ours,
            raw_label: "raw POST (reqwest)",
            raw,
            target: CLIENT_TARGET,
        },
        Comparison {
            what: "streamed + usage",
            ours_label: "OpenAiModel (stream = true)",
            ours: ours_stream,
            raw_label: "raw POST, SSE read to [DONE]",
            raw: raw_stream,
            target: CLIENT_TARGET,
        },
    ];
    let mut out = format!(
        "model client latency against {url} ({}), {n} requests each (after 1 warm-up), {} completion tokens max\n\n{:<22}{:<34}{:>9}{:>9}\n",
        args.model, args.max_tokens, "", "", "p50 ms", "p95 ms"
    );
    for row in &rows {
        out.push_str(&row.render());
    }
    let (p50, _) = percentiles(&rows[1].ours);
    out.push_str(&format!(
        "\ngeneration: {} completion tokens in {:.2} s streamed ({:.1} tokens/s end to end; p50 request {p50:.0} ms)\n",
        generated.0,
        generated.1.as_secs_f64(),
        generated.0 as f64 / generated.1.as_secs_f64().max(1e-9),
    ));
    if accounting.is_empty() {
        out.push_str("token accounting: every request's usage equals the server's own count\n");
    } else {
        out.push_str(&format!(
            "token accounting: MISMATCH\n  {}\n",
            accounting.join("\n  ")
        ));
    }
    print!("{out}");
    if !accounting.is_empty() {
        bail!("the client's token counts differ from the server's");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_comes_from_the_json_reply_or_the_last_sse_chunk_with_one() {
        let json = r#"{"choices":[],"usage":{"prompt_tokens":21,"completion_tokens":7}}"#;
        assert_eq!(
            usage_of(json),
            Usage {
                prompt_tokens: 21,
                completion_tokens: 7
            }
        );
        let sse = "data: {\"choices\":[{\"delta\":{\"content\":\"2\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":9}}\n\ndata: [DONE]\n\n";
        assert_eq!(
            usage_of(sse),
            Usage {
                prompt_tokens: 30,
                completion_tokens: 9
            }
        );
        assert_eq!(usage_of("data: [DONE]"), Usage::default());
    }
}
