//! The edge's own answers written to the client's session: the response
//! the rules made (`request::Answer::response`), head then body. Both
//! paths write through here (the phases on their session's downstream).

use crate::request::{Answer, RequestCtx, Response};
use pingora_core::protocols::http::ServerSession;
use pingora_core::Result;

pub async fn answer(
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    answer: Answer,
) -> Result<()> {
    let Response { head, body } = answer.response(session.req_header(), ctx);
    session.write_response_header(Box::new(head)).await?;
    if let Some(body) = body {
        session.write_response_body(body, true).await?;
    }
    Ok(())
}
