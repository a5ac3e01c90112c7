//! The server API on protocol messages: one method per `HubApi` RPC, so the gRPC service and
//! the HTTP API (`POST /v1/api/<method>`) are thin adapters returning identical responses
//! (`error` or `result`, never both).

use switchboard_proto::v1 as proto;

use crate::error::HubError;
use crate::hub::{Hub, ServerPublish};

fn split<T>(r: Result<T, HubError>) -> (Option<proto::Error>, Option<T>) {
    match r {
        Ok(v) => (None, Some(v)),
        Err(e) => (Some(e.to_proto()), None),
    }
}

fn none_if_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

impl Hub {
    /// `HubApi.Publish`.
    pub async fn api_publish(&self, req: proto::ApiPublishRequest) -> proto::PublishResponse {
        let options = ServerPublish {
            idempotency_key: req.idempotency_key,
            tags: req.tags,
        };
        let (error, result) = split(self.publish(&req.channel, req.data, options).await);
        proto::PublishResponse { error, result }
    }

    /// `HubApi.Broadcast`.
    pub async fn api_broadcast(&self, req: proto::BroadcastRequest) -> proto::BroadcastResponse {
        let options = ServerPublish {
            idempotency_key: req.idempotency_key,
            tags: req.tags,
        };
        let responses = self
            .broadcast(&req.channels, &req.data, options)
            .await
            .into_iter()
            .map(|r| {
                let (error, result) = split(r);
                proto::PublishResponse { error, result }
            })
            .collect();
        proto::BroadcastResponse {
            error: None,
            result: Some(proto::BroadcastResult { responses }),
        }
    }

    /// `HubApi.Presence`.
    pub async fn api_presence(&self, req: proto::PresenceRequest) -> proto::PresenceResponse {
        let (error, result) = split(self.presence(&req.channel).await);
        proto::PresenceResponse { error, result }
    }

    /// `HubApi.PresenceStats`.
    pub async fn api_presence_stats(
        &self,
        req: proto::PresenceStatsRequest,
    ) -> proto::PresenceStatsResponse {
        let (error, result) = split(self.presence_stats(&req.channel).await);
        proto::PresenceStatsResponse { error, result }
    }

    /// `HubApi.History`.
    pub async fn api_history(&self, req: proto::HistoryRequest) -> proto::HistoryResponse {
        let (error, result) = split(self.history(&req).await);
        proto::HistoryResponse { error, result }
    }

    /// `HubApi.HistoryRemove`.
    pub async fn api_history_remove(
        &self,
        req: proto::HistoryRemoveRequest,
    ) -> proto::HistoryRemoveResponse {
        let r = self
            .history_remove(&req.channel)
            .await
            .map(|()| proto::HistoryRemoveResult {});
        let (error, result) = split(r);
        proto::HistoryRemoveResponse { error, result }
    }

    /// `HubApi.Disconnect`.
    pub async fn api_disconnect(&self, req: proto::DisconnectRequest) -> proto::DisconnectResponse {
        let r = if req.user.is_empty() {
            Err(HubError::BadRequest("user required"))
        } else {
            self.disconnect_user(&req.user, none_if_empty(&req.client_id), req.disconnect)
                .await
        };
        let (error, result) = split(r.map(|()| proto::DisconnectResult {}));
        proto::DisconnectResponse { error, result }
    }

    /// `HubApi.Unsubscribe`.
    pub async fn api_unsubscribe(
        &self,
        req: proto::ApiUnsubscribeRequest,
    ) -> proto::ApiUnsubscribeResponse {
        let r = if req.user.is_empty() {
            Err(HubError::BadRequest("user required"))
        } else {
            self.unsubscribe_user(&req.user, &req.channel, none_if_empty(&req.client_id))
                .await
        };
        let (error, result) = split(r.map(|()| proto::ApiUnsubscribeResult {}));
        proto::ApiUnsubscribeResponse { error, result }
    }

    /// `HubApi.Info` (this node only; multi-node info arrives with a networked broker).
    pub fn api_info(&self, _req: proto::InfoRequest) -> proto::InfoResponse {
        proto::InfoResponse {
            error: None,
            result: Some(proto::InfoResult {
                nodes: vec![self.info()],
            }),
        }
    }
}
