// Type declarations of switchboard-client (switchboard.js). Reference: docs/clients.md.

export declare const VERSION: string;

export type ClientStateName = "disconnected" | "connecting" | "connected";
export type SubscriptionStateName = "unsubscribed" | "subscribing" | "subscribed";
export type TransportName = "websocket" | "sse" | "webtransport";

export declare const State: Readonly<{
  Disconnected: "disconnected";
  Connecting: "connecting";
  Connected: "connected";
}>;

export declare const SubscriptionState: Readonly<{
  Unsubscribed: "unsubscribed";
  Subscribing: "subscribing";
  Subscribed: "subscribed";
}>;

/** Codes of errors and disconnects made by the SDK itself (the server's are documented in docs/hub.md). */
export declare const ClientCode: Readonly<{
  Called: 0;
  TransportClosed: 1;
  Timeout: 2;
  NotConnected: 3;
  NotAvailable: 4;
  NoTransport: 5;
  Stale: 6;
  InsufficientState: 7;
}>;

/** An error with the server's (or the SDK's) code; `temporary` when retrying may help. */
export declare class HubError extends Error {
  constructor(code: number, message: string, temporary?: boolean);
  readonly code: number;
  readonly temporary: boolean;
}

/** Throw this from `getToken` when the user may not connect: the client stops for good. */
export declare class UnauthorizedError extends Error {
  constructor(message?: string);
}

/** Full-jitter exponential backoff: a random delay in [0, min(max, min * 2^attempt)). */
export declare function backoff(attempt: number, min: number, max: number): number;

/** A WebSocket constructor: the browser's, or e.g. the `ws` package's in Node.js 20. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => any;

/** A WebTransport constructor: the browser's (or a stand-in with `ready`, `closed`, `createBidirectionalStream()`, `close()`). */
export type WebTransportConstructor = new (url: string, options?: WebTransportOptions) => any;

export interface ClientOptions {
  /** Connection JWT (empty = anonymous, where the server allows it). */
  token?: string;
  /** Called for a token when there is none yet and whenever the server says it expired (109). */
  getToken?: () => Promise<string> | string;
  /** WebSocket implementation (default: globalThis.WebSocket). */
  websocket?: WebSocketConstructor | null;
  /** fetch implementation for SSE, HTTP publish and ICE servers (default: globalThis.fetch). */
  fetch?: typeof fetch | null;
  /**
   * Transports in the order tried (default ["websocket", "sse"]). "webtransport" (an opt-in) is
   * used only where a WebTransport implementation exists; a list naming only it means
   * ["webtransport", "websocket", "sse"].
   */
  transports?: TransportName[];
  /** WebTransport implementation (default: globalThis.WebTransport). */
  webtransport?: WebTransportConstructor | null;
  /** The WebTransport URL (default: `https://` + the server URL's host and prefix + `/v1/wt`). */
  webtransportUrl?: string | null;
  /** Options for `new WebTransport(url, options)`, e.g. `serverCertificateHashes`. */
  webtransportOptions?: WebTransportOptions | null;
  /** First reconnect delay cap in ms (default 500); the cap doubles per failed attempt. */
  minReconnectDelay?: number;
  /** Largest reconnect delay in ms (default 20000). */
  maxReconnectDelay?: number;
  /** Command reply and open timeout in ms (default 10000). */
  timeout?: number;
  /** Interval of the client's ping command over WebSocket or WebTransport, in ms (default 15000). */
  pingInterval?: number;
  /** An SSE stream silent this long (ms) is reopened (default 60000; the server pings every 25 s). */
  sseIdleTimeout?: number;
  /** Client name sent with `connect` (informational). */
  name?: string;
  /** Client version sent with `connect` (informational). */
  version?: string;
  /** Log to console.debug. */
  debug?: boolean;
}

export interface StreamPosition {
  offset: number;
  epoch: string;
}

export interface ClientInfo {
  user: string;
  client: string;
  /** The token's `info` claim. */
  connInfo: any;
}

export interface Publication {
  channel: string;
  /** A JSON value, or a Uint8Array for a binary payload. */
  data: any;
  /** Position in the channel's history (0 on channels without history). */
  offset: number;
  epoch: string;
  /** The publisher (absent for server-API publications). */
  info?: ClientInfo;
  tags: Record<string, string>;
}

export interface StateContext<S> {
  oldState: S;
  newState: S;
}

export interface ConnectingContext {
  /** Why: the server's disconnect code (3000..3499), ClientCode.TransportClosed, an error code, ... */
  code: number;
  reason: string;
}

export interface ConnectedContext {
  client: string;
  user: string;
  transport: "webtransport" | "websocket" | "sse";
  version: string;
  expires: boolean;
  ttl: number;
}

export interface DisconnectedContext {
  /** The server's disconnect code (e.g. 3500 invalid token, 3503 force disconnect), 109, or ClientCode.Called. */
  code: number;
  reason: string;
  reconnect?: boolean;
  error?: Error;
}

export interface ErrorContext {
  type: string;
  error: Error;
  channel?: string;
}

export interface ClientEvents {
  state: StateContext<ClientStateName>;
  connecting: ConnectingContext;
  connected: ConnectedContext;
  disconnected: DisconnectedContext;
  error: ErrorContext;
}

export interface SubscriptionOptions {
  /** Recover from this position on the first subscribe (e.g. one saved before a page reload). */
  since?: { offset: number | string; epoch: string };
}

export interface SubscribingContext {
  channel: string;
  code: number;
  reason: string;
}

export interface SubscribedContext {
  channel: string;
  /** The channel keeps history: positions and recovery work. */
  recoverable: boolean;
  positioned: boolean;
  /** The channel's position when subscribed. */
  streamPosition?: StreamPosition;
  /** This subscribe tried to recover from a previous position. */
  wasRecovering: boolean;
  /** Recovery succeeded: the missed publications follow, in order. */
  recovered: boolean;
}

export interface UnsubscribedContext {
  channel: string;
  /** ClientCode.Called, a server unsubscribe code (2000), or a refusal (102, 103, ...). */
  code: number;
  reason: string;
}

export interface RecoveryFailedContext {
  channel: string;
  /** The new position the subscription continues from. */
  streamPosition?: StreamPosition;
  reason: string;
}

export interface JoinLeaveContext {
  channel: string;
  info?: ClientInfo;
}

export interface SubscriptionEvents {
  state: StateContext<SubscriptionStateName>;
  subscribing: SubscribingContext;
  subscribed: SubscribedContext;
  unsubscribed: UnsubscribedContext;
  publication: Publication;
  join: JoinLeaveContext;
  leave: JoinLeaveContext;
  /** Publications were missed and cannot be recovered: reload the state by other means. */
  recoveryfailed: RecoveryFailedContext;
  error: ErrorContext;
}

declare class Emitter<Events> {
  on<K extends keyof Events & string>(event: K, handler: (ctx: Events[K]) => void): this;
  once<K extends keyof Events & string>(event: K, handler: (ctx: Events[K]) => void): this;
  off<K extends keyof Events & string>(event: K, handler?: (ctx: Events[K]) => void): this;
}

export interface PublishOptions {
  /** The same key within the server's idempotency window publishes once. */
  idempotencyKey?: string;
}

export interface PublishResult {
  offset: number;
  epoch: string;
}

export interface HistoryOptions {
  /** Publications to return (default 0: only the current position). */
  limit?: number;
  /** Only publications after (before, with `reverse`) this position. */
  since?: { offset: number | string; epoch: string };
  reverse?: boolean;
}

export interface HistoryResult {
  publications: Publication[];
  offset: number;
  epoch: string;
}

export interface PresenceResult {
  /** Client id → who. */
  clients: Record<string, ClientInfo>;
}

export interface PresenceStatsResult {
  numClients: number;
  numUsers: number;
}

export declare class Client extends Emitter<ClientEvents> {
  /**
   * @param url the server: `https://host[:port][/prefix]`, `wss://host/v1/ws`, or a path
   *   resolved against the page.
   */
  constructor(url: string, opts?: ClientOptions);
  readonly state: ClientStateName;
  /** The transport in use while connected. */
  readonly transport: "" | "webtransport" | "websocket" | "sse";
  readonly clientId: string;
  readonly user: string;
  connect(): void;
  disconnect(): void;
  /** Resolves once connected. */
  ready(timeout?: number): Promise<void>;
  newSubscription(channel: string, opts?: SubscriptionOptions): Subscription;
  getSubscription(channel: string): Subscription | null;
  removeSubscription(sub: Subscription | null): void;
  subscriptions(): Record<string, Subscription>;
  publish(channel: string, data: unknown, opts?: PublishOptions): Promise<PublishResult>;
  history(channel: string, opts?: HistoryOptions): Promise<HistoryResult>;
  presence(channel: string): Promise<PresenceResult>;
  presenceStats(channel: string): Promise<PresenceStatsResult>;
  /** Joins a signaling room (browsers: needs RTCPeerConnection); resolves once joined. */
  joinRoom(name: string, opts?: RoomOptions): Promise<Room>;
}

export declare class Subscription extends Emitter<SubscriptionEvents> {
  readonly channel: string;
  readonly state: SubscriptionStateName;
  /** The last position seen (null on channels without history). */
  readonly position: StreamPosition | null;
  subscribe(): void;
  unsubscribe(): void;
  /** Resolves once subscribed. */
  ready(timeout?: number): Promise<void>;
  publish(data: unknown, opts?: PublishOptions): Promise<PublishResult>;
  history(opts?: HistoryOptions): Promise<HistoryResult>;
  presence(): Promise<PresenceResult>;
  presenceStats(): Promise<PresenceStatsResult>;
}

export interface RoomOptions {
  /** Our peer id (1..64 of [A-Za-z0-9_-]; default random). */
  peerId?: string;
  /** Metadata shown to the other peers (JSON, at most 4096 bytes). */
  data?: unknown;
  /** Only TURN relay candidates (iceTransportPolicy "relay"); fails when the server has no TURN. */
  relayOnly?: boolean;
  /** A local stream whose tracks every peer connection sends. */
  stream?: MediaStream;
  /** Label of the data channel opened to each peer ("data" by default; false for none). */
  dataChannel?: string | false;
  /** ICE servers to use instead of GET /v1/ice-servers. */
  iceServers?: RTCIceServer[];
  /** More RTCConfiguration (iceServers and iceTransportPolicy are set by the room). */
  rtcConfig?: RTCConfiguration;
  /** RTCPeerConnection implementation (default: globalThis.RTCPeerConnection). */
  RTCPeerConnection?: typeof RTCPeerConnection;
  /**
   * false: the room opens no connection itself (no perfect negotiation, no data channel, no
   * byes on leave()); the peers' offers, answers and candidates arrive as `signal` events and
   * go out with sendDescription / sendCandidate / bye, over your own RTCPeerConnection.
   */
  negotiate?: boolean;
}

export declare class RoomPeer {
  readonly id: string;
  /** Our perfect-negotiation role towards this peer. */
  readonly polite: boolean;
  /** The metadata it joined with. */
  readonly data: any;
  readonly info?: ClientInfo;
  readonly pc: RTCPeerConnection | null;
  /** The default data channel. */
  readonly channel: RTCDataChannel | null;
  /** Sends on the default data channel when it is open. */
  send(data: string | Blob | ArrayBuffer | ArrayBufferView): boolean;
  close(): void;
}

export interface PeerContext {
  peer: RoomPeer;
}

export interface RoomEvents {
  joined: { room: string; peerId: string; polite: boolean; members: string[] };
  peerjoined: PeerContext;
  peerleft: PeerContext & { timedOut: boolean };
  track: PeerContext & { track: MediaStreamTrack; streams: MediaStream[] };
  datachannel: PeerContext & { channel: RTCDataChannel };
  channelopen: PeerContext & { channel: RTCDataChannel };
  message: PeerContext & { data: any };
  connectionstatechange: PeerContext & { state: RTCPeerConnectionState };
  bye: PeerContext & { reason: string };
  /** With `negotiate: false`: a peer's offer or answer, or one of its candidates. */
  signal: PeerContext & { description?: { type: "offer" | "answer"; sdp: string }; candidate?: RTCIceCandidateInit };
  error: { room: string; peer?: RoomPeer; error: Error };
  /** The room was left: `leave()`, or the client stopped for good (then with its code and reason). */
  left: { room: string; code?: number; reason?: string };
}

export declare class Room extends Emitter<RoomEvents> {
  readonly name: string;
  readonly peerId: string;
  readonly polite: boolean;
  readonly joined: boolean;
  readonly peers: Map<string, RoomPeer>;
  addStream(stream: MediaStream): void;
  /** Sends on every open default data channel; returns how many peers got it. */
  send(data: string | Blob | ArrayBuffer | ArrayBufferView): number;
  leave(): Promise<void>;
  /** The RTCConfiguration of the room's connections (ICE servers from /v1/ice-servers). */
  rtcConfiguration(): RTCConfiguration;
  sendDescription(to: string, description: { type: "offer" | "answer"; sdp: string }): Promise<unknown>;
  sendCandidate(to: string, candidate: RTCIceCandidateInit | null): Promise<unknown>;
  bye(to: string, reason?: string): Promise<unknown>;
}

export default Client;
