//! Server-sent events framing for OpenAI-style streams: `data: <json>\n\n`, ending `data: [DONE]`.

use actix_web::http::header;
use actix_web::HttpResponse;
use bytes::Bytes;
use futures_util::Stream;

/// Appends one `data:` event.
pub fn push_event(out: &mut String, json: &str) {
    out.push_str("data: ");
    out.push_str(json);
    out.push_str("\n\n");
}

/// Appends the terminating `[DONE]` marker clients wait for.
pub fn push_done(out: &mut String) {
    out.push_str("data: [DONE]\n\n");
}

/// Wraps an event stream in a 200 `text/event-stream` response.
pub fn response<S>(body: S) -> HttpResponse
where
    S: Stream<Item = Result<Bytes, actix_web::Error>> + 'static,
{
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // Stops reverse proxies (nginx) from buffering the stream.
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_data_lines_separated_by_blank_lines() {
        let mut out = String::new();
        push_event(&mut out, r#"{"a":1}"#);
        push_done(&mut out);
        assert_eq!(out, "data: {\"a\":1}\n\ndata: [DONE]\n\n");
    }
}
