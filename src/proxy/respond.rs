//! The edge's own answers written to Pingora's session: the response the
//! rules made (`request::Answer::response`), head then body.

use crate::request::{Answer, RequestCtx, Response};
use pingora_core::Result;
use pingora_proxy::Session;

pub async fn answer(session: &mut Session, ctx: &mut RequestCtx, answer: Answer) -> Result<()> {
    let Response { head, body } = answer.response(session.req_header(), ctx);
    session
        .write_response_header(Box::new(head), body.is_none())
        .await?;
    if let Some(body) = body {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}
