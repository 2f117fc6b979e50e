//! Message search, invitations and followed rooms.

use crate::session::unexpected;
use crate::{Client, ClientError, Result};
use stoa_proto::{FollowedRoom, Message, MessageQuery, Request, Response, Seq};

impl Client {
    /// Messages matching `query` in the rooms this user may read (or `query.room`), newest first.
    pub async fn search_messages(&self, query: MessageQuery) -> Result<Vec<Message>> {
        match self
            .shared()
            .call(Request::SearchMessages(query), None)
            .await?
        {
            Response::Found(m) => Ok(m),
            other => Err(ClientError::Protocol(unexpected("Found", &other))),
        }
    }

    /// Rooms this user was newly made a member of since last asked; asking clears the list.
    pub async fn invitations(&self) -> Result<Vec<String>> {
        match self.shared().call(Request::Invitations, None).await? {
            Response::Invitations(rooms) => Ok(rooms),
            other => Err(ClientError::Protocol(unexpected("Invitations", &other))),
        }
    }

    /// Follow (or stop following) a room; the list is kept on the server for every sign-in.
    pub async fn follow(&self, room: &str, follow: bool) -> Result<()> {
        match self
            .shared()
            .call(
                Request::Follow {
                    room: room.to_string(),
                    follow,
                },
                None,
            )
            .await?
        {
            Response::Done => Ok(()),
            other => Err(ClientError::Protocol(unexpected("Done", &other))),
        }
    }

    /// The followed rooms with their unread counts.
    pub async fn followed(&self) -> Result<Vec<FollowedRoom>> {
        match self.shared().call(Request::Followed, None).await? {
            Response::Followed(rooms) => Ok(rooms),
            other => Err(ClientError::Protocol(unexpected("Followed", &other))),
        }
    }

    /// Record that this user has read `room` up to `seq` (markers only move forward).
    pub async fn mark_read(&self, room: &str, seq: Seq) -> Result<()> {
        match self
            .shared()
            .call(
                Request::MarkRead {
                    room: room.to_string(),
                    seq,
                },
                None,
            )
            .await?
        {
            Response::Done => Ok(()),
            other => Err(ClientError::Protocol(unexpected("Done", &other))),
        }
    }

    /// Join every followed room (last `default_chat_history` messages each, then live), as a
    /// client does at sign-in; answers each room with its unread count before joining.
    pub async fn join_followed(&self) -> Result<Vec<FollowedRoom>> {
        let rooms = self.followed().await?;
        for r in &rooms {
            self.join(&r.room).await?;
        }
        Ok(rooms)
    }
}
