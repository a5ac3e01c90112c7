//! gRPC: `switchboard.v1.Hub` (bidirectional `Connect` stream plus unary calls authenticated by
//! `authorization: Bearer <jwt>` metadata) and `switchboard.v1.HubApi` (the server API,
//! `authorization: apikey KEY`). Served by the same HTTP stack (h2c on `--http`, h2 on
//! `--https`), merged into the axum router with `tonic::service::Routes`.

use std::net::SocketAddr;
use std::pin::Pin;

use axum::extract::ConnectInfo;
use axum::Router;
use switchboard_hub::proto;
use switchboard_hub::proto::hub_api_server::{HubApi, HubApiServer};
use switchboard_hub::proto::hub_server::{Hub as HubService, HubServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::ctx::{auth_param, split, ApiAuthError, Ctx};
use super::stream::{drive, FrameConn, Inbound, Out};

pub(crate) fn routes(ctx: Ctx) -> Router {
    let hub = HubServer::new(GrpcHub(ctx.clone())).max_decoding_message_size(ctx.max_frame);
    let api = HubApiServer::new(GrpcApi(ctx.clone())).max_decoding_message_size(ctx.max_frame);
    tonic::service::Routes::new(hub)
        .add_service(api)
        .into_axum_router()
}

fn peer_of<T>(request: &Request<T>) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| *a)
}

fn authorization<'a, T>(request: &'a Request<T>, scheme: &str) -> Option<&'a str> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| auth_param(v, scheme))
}

struct GrpcHub(Ctx);

type FrameStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::ServerFrame, Status>> + Send>>;

impl GrpcHub {
    /// A one-call session from the bearer token; `Err` is the connect error as a response.
    fn session<T>(&self, request: &Request<T>) -> Result<switchboard_hub::Session, proto::Error> {
        let connect = proto::ConnectRequest {
            token: authorization(request, "bearer")
                .unwrap_or_default()
                .to_owned(),
            ..Default::default()
        };
        self.0
            .connect(&connect, "grpc", peer_of(request))
            .map_err(|e| e.to_proto())
    }
}

#[tonic::async_trait]
impl HubService for GrpcHub {
    type ConnectStream = FrameStream;

    async fn connect(
        &self,
        request: Request<Streaming<proto::Command>>,
    ) -> Result<Response<FrameStream>, Status> {
        let peer = peer_of(&request);
        let token = authorization(&request, "bearer").map(str::to_owned);
        let inbound = request.into_inner();
        // Bounded: a client that does not read fills this, then the hub queue, and is then
        // disconnected as a slow consumer.
        let (tx, rx) = mpsc::channel(64);
        let conn = GrpcConn {
            inbound,
            tx,
            write_timeout: self.0.idle,
        };
        tokio::spawn(drive(self.0.clone(), conn, "grpc", peer, token));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn publish(
        &self,
        request: Request<proto::PublishRequest>,
    ) -> Result<Response<proto::PublishResponse>, Status> {
        let session = match self.session(&request) {
            Ok(s) => s,
            Err(error) => {
                return Ok(Response::new(proto::PublishResponse {
                    error: Some(error),
                    result: None,
                }))
            }
        };
        let r = request.into_inner();
        let outcome = session
            .publish(&r.channel, r.data, &r.idempotency_key)
            .await;
        session.close().await;
        let (error, result) = split(outcome);
        Ok(Response::new(proto::PublishResponse { error, result }))
    }

    async fn history(
        &self,
        request: Request<proto::HistoryRequest>,
    ) -> Result<Response<proto::HistoryResponse>, Status> {
        let session = match self.session(&request) {
            Ok(s) => s,
            Err(error) => {
                return Ok(Response::new(proto::HistoryResponse {
                    error: Some(error),
                    result: None,
                }))
            }
        };
        let outcome = session.history(request.get_ref()).await;
        session.close().await;
        let (error, result) = split(outcome);
        Ok(Response::new(proto::HistoryResponse { error, result }))
    }

    async fn presence(
        &self,
        request: Request<proto::PresenceRequest>,
    ) -> Result<Response<proto::PresenceResponse>, Status> {
        let session = match self.session(&request) {
            Ok(s) => s,
            Err(error) => {
                return Ok(Response::new(proto::PresenceResponse {
                    error: Some(error),
                    result: None,
                }))
            }
        };
        let outcome = session.presence(&request.get_ref().channel).await;
        session.close().await;
        let (error, result) = split(outcome);
        Ok(Response::new(proto::PresenceResponse { error, result }))
    }
}

struct GrpcConn {
    inbound: Streaming<proto::Command>,
    tx: mpsc::Sender<Result<proto::ServerFrame, Status>>,
    /// A write blocked longer than this (the client stopped reading) ends the stream.
    write_timeout: std::time::Duration,
}

impl FrameConn for GrpcConn {
    async fn recv(&mut self) -> Inbound {
        match self.inbound.message().await {
            Ok(Some(command)) => Inbound::Command(command),
            Ok(None) => Inbound::Closed,
            Err(status) if status.code() == tonic::Code::OutOfRange => Inbound::TooBig,
            Err(status) if status.code() == tonic::Code::Internal => {
                Inbound::Bad(status.message().to_owned())
            }
            Err(_) => Inbound::Closed,
        }
    }

    async fn send(&mut self, out: Out<'_>) -> bool {
        let frame = match out {
            Out::Reply(r) => proto::server_frame::Frame::Reply(r.clone()),
            Out::Push(p) => proto::server_frame::Frame::Push(p.push().clone()),
        };
        let frame = proto::ServerFrame { frame: Some(frame) };
        matches!(
            tokio::time::timeout(self.write_timeout, self.tx.send(Ok(frame))).await,
            Ok(Ok(()))
        )
    }

    fn pings(&self) -> bool {
        false
    }

    async fn ping(&mut self) -> bool {
        true
    }

    async fn close(self, code: u16, reason: &str) {
        // Hub disconnects were sent as a push; a message over the size limit ends the stream
        // with a status.
        if code == 1009 {
            let _ = self
                .tx
                .send(Err(Status::out_of_range(reason.to_owned())))
                .await;
        }
    }
}

struct GrpcApi(Ctx);

impl GrpcApi {
    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let value = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let peer = request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0);
        match self.0.api_auth(value, peer) {
            Ok(()) => Ok(()),
            Err(ApiAuthError::Refused) => Err(Status::unauthenticated(
                "server API: missing or invalid API key (metadata authorization: apikey KEY)",
            )),
            Err(ApiAuthError::Blocked(left)) => Err(Status::resource_exhausted(format!(
                "server API: too many failed authentications from this address; retry in {} s",
                left.as_secs().max(1)
            ))),
        }
    }
}

#[tonic::async_trait]
impl HubApi for GrpcApi {
    async fn publish(
        &self,
        request: Request<proto::ApiPublishRequest>,
    ) -> Result<Response<proto::PublishResponse>, Status> {
        self.check(&request)?;
        Ok(Response::new(
            self.0.hub.api_publish(request.into_inner()).await,
        ))
    }

    async fn broadcast(
        &self,
        request: Request<proto::BroadcastRequest>,
    ) -> Result<Response<proto::BroadcastResponse>, Status> {
        self.check(&request)?;
        Ok(Response::new(
            self.0.hub.api_broadcast(request.into_inner()).await,
        ))
    }

    async fn presence(
        &self,
        request: Request<proto::PresenceRequest>,
    ) -> Result<Response<proto::PresenceResponse>, Status> {
        self.check(&request)?;
        Ok(Response::new(
            self.0.hub.api_presence(request.into_inner()).await,
        ))
    }

    async fn presence_stats(
        &self,
        request: Request<proto::PresenceStatsRequest>,
    ) -> Result<Response<proto::PresenceStatsResponse>, Status> {
        self.check(&request)?;
        Ok(Response::new(
            self.0.hub.api_presence_stats(request.into_inner()).await,
        ))
    }

    async fn history(
        &self,
        request: Request<proto::HistoryRequest>,
    ) -> Result<Response<proto::HistoryResponse>, Status> {
        self.check(&request)?;
        Ok(Response::new(
            self.0.hub.api_history(request.into_inner()).await,
        ))
    }

    async fn history_remove(
        &self,
        request: Request<proto::HistoryRemoveRequest>,
    ) -> Result<Response<proto::HistoryRemoveResponse>, Status> {
        self.check(&request)?;
        Ok(Response::new(
            self.0.hub.api_history_remove(request.into_inner()).await,
        ))
    }

    async fn disconnect(
        &self,
        request: Request<proto::DisconnectRequest>,
    ) -> Result<Response<proto::DisconnectResponse>, Status> {
        self.check(&request)?;
        Ok(Response::new(
            self.0.hub.api_disconnect(request.into_inner()).await,
        ))
    }

    async fn unsubscribe(
        &self,
        request: Request<proto::ApiUnsubscribeRequest>,
    ) -> Result<Response<proto::ApiUnsubscribeResponse>, Status> {
        self.check(&request)?;
        Ok(Response::new(
            self.0.hub.api_unsubscribe(request.into_inner()).await,
        ))
    }

    async fn info(
        &self,
        request: Request<proto::InfoRequest>,
    ) -> Result<Response<proto::InfoResponse>, Status> {
        self.check(&request)?;
        Ok(Response::new(self.0.hub.api_info(request.into_inner())))
    }
}
