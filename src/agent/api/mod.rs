//! The VIM command API on 127.0.0.1:2410 (agent spec §4). Rouille handlers run
//! on the HTTP server's worker threads: they check the request, parse URL and
//! body into a typed `ApiRequest`, send it to the dispatcher with their own
//! `bounded(1)` reply channel, wait with a timeout (503 when it expires) and
//! render the result. `ApiError::status` is the one place errors become HTTP
//! status codes. Each endpoint family has its own file with both its parsing
//! (HTTP thread) and its handling (`impl State`, dispatcher thread).

pub mod hosts;
pub mod instances;

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};
use gh_threads::rouille::{Request, Response};
use thiserror::Error;

use crate::wire::payload::to_json;
use crate::wire::vim::{Fail, Pass};

use super::dispatcher::Event;
use super::metrics::HttpCounters;
use super::state::State;
use super::url::{self, Level};

pub use hosts::HostRequest;
pub use instances::InstanceRequest;

/// A request that needs the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiRequest {
    Host(HostRequest),
    Instance(InstanceRequest),
    Metrics,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiReply {
    /// 200 `{"status":"pass"}`.
    Pass,
    /// 204, no body.
    NoContent,
    /// 200 with this JSON body.
    Json(Vec<u8>),
    /// 200 Prometheus text.
    Metrics(String),
}

/// Every way a command fails; the reasons are the original's.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ApiError {
    #[error("no buffer")]
    Forbidden,
    #[error("command parse error")]
    Parse,
    #[error("invalid data")]
    InvalidData,
    #[error("bad state")]
    BadState,
    #[error("entity not found")]
    NotFound,
    #[error("unsupported http command")]
    Unsupported,
    #[error("length required")]
    LengthRequired,
    #[error("request body too large")]
    TooLarge,
    #[error("method not implemented")]
    NotImplemented,
    #[error("busy")]
    Busy,
}

impl ApiError {
    /// The one mapping from errors to HTTP status codes.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::Forbidden => 403,
            ApiError::Parse | ApiError::InvalidData | ApiError::BadState | ApiError::Unsupported => 400,
            ApiError::NotFound => 404,
            ApiError::LengthRequired => 411,
            ApiError::TooLarge => 413,
            ApiError::NotImplemented => 501,
            ApiError::Busy => 503,
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct ApiContext {
    pub tx: Sender<Event>,
    pub counters: Arc<HttpCounters>,
    pub timeout: Duration,
    pub body_limit: usize,
}

/// The rouille handler.
pub fn handle(req: &Request, ctx: &ApiContext) -> Response {
    let (endpoint, result) = route(req, ctx);
    let status = match &result {
        Ok(ApiReply::NoContent) => 204,
        Ok(_) => 200,
        Err(e) => e.status(),
    };
    ctx.counters.count(endpoint, req.method(), status);
    if let Err(e) = &result {
        log::debug!("{} {} -> {status} {e}", req.method(), req.raw_url());
    }
    match result {
        Ok(ApiReply::Pass) => json_response(200, to_json(&Pass::new())),
        Ok(ApiReply::NoContent) => Response::text("").with_status_code(204),
        Ok(ApiReply::Json(body)) => json_response(200, Ok(body)),
        Ok(ApiReply::Metrics(text)) => {
            let text = format!("{text}{}", ctx.counters.render());
            Response::from_data("text/plain; version=0.0.4", text).with_status_code(200)
        }
        Err(e) => json_response(e.status(), to_json(&Fail::new(&e.to_string()))),
    }
}

fn json_response(code: u16, body: Result<Vec<u8>, serde_json::Error>) -> Response {
    match body {
        Ok(mut b) => {
            b.push(b'\n');
            Response::from_data("application/json", b).with_status_code(code)
        }
        Err(e) => {
            log::error!("cannot serialise a reply: {e}");
            Response::text("").with_status_code(500)
        }
    }
}

/// Reads the body, at most `limit` bytes.
fn body(req: &Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    let Some(data) = req.data() else {
        return Ok(Vec::new());
    };
    let mut buf = Vec::new();
    data.take(limit as u64 + 1).read_to_end(&mut buf).map_err(|_| ApiError::Parse)?;
    if buf.len() > limit {
        return Err(ApiError::TooLarge);
    }
    Ok(buf)
}

/// Parses a JSON body into `T`; an empty body is 411, anything else 400.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::LengthRequired);
    }
    serde_json::from_slice(body).map_err(|_| ApiError::Parse)
}

fn route(req: &Request, ctx: &ApiContext) -> (&'static str, Result<ApiReply, ApiError>) {
    if req.url() == "/metrics" && req.method() == "GET" {
        return ("metrics", ask(ctx, ApiRequest::Metrics));
    }
    if req.header("User-Agent").is_some_and(|ua| ua != "vim/1.0") {
        return ("other", Err(ApiError::Forbidden));
    }
    let Some(parsed) = url::parse(req.raw_url()) else {
        return ("other", Err(ApiError::Forbidden));
    };
    if !matches!(req.method(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
        return ("other", Err(ApiError::NotImplemented));
    }
    let body = match body(req, ctx.body_limit) {
        Ok(b) => b,
        Err(e) => return ("other", Err(e)),
    };
    match parsed.level {
        Level::Host => ("hosts", hosts::parse(req.method(), &parsed, &body).and_then(|r| dispatch(ctx, r))),
        Level::Instance => {
            let endpoint = instances::endpoint(&parsed);
            (endpoint, instances::parse(req.method(), &parsed, &body).and_then(|r| dispatch(ctx, r)))
        }
    }
}

/// A parsed request: answered in place, or to be sent to the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Done(ApiReply),
    Ask(ApiRequest),
}

fn dispatch(ctx: &ApiContext, p: Parsed) -> Result<ApiReply, ApiError> {
    match p {
        Parsed::Done(r) => Ok(r),
        Parsed::Ask(r) => ask(ctx, r),
    }
}

/// Sends `req` to the dispatcher and waits for its answer.
fn ask(ctx: &ApiContext, req: ApiRequest) -> Result<ApiReply, ApiError> {
    let (reply_tx, reply_rx) = bounded(1);
    let deadline = Instant::now() + ctx.timeout;
    ctx.tx.send_deadline(Event::Api { req, reply: reply_tx }, deadline).map_err(|_| ApiError::Busy)?;
    reply_rx.recv_deadline(deadline).map_err(|_| ApiError::Busy)?
}

impl State {
    /// Dispatcher side: answers one API request.
    pub fn on_api(&mut self, req: ApiRequest, now: Instant) -> Result<ApiReply, ApiError> {
        match req {
            ApiRequest::Host(r) => self.on_host_request(r, now),
            ApiRequest::Instance(r) => self.on_instance_request(r, now),
            ApiRequest::Metrics => Ok(ApiReply::Metrics(super::metrics::render(self))),
        }
    }
}
