/** Protocol constants and defaults. docs/PROTOCOL.md gives the reason for each. */
export const PROTOCOL_VERSION = 1;

export const DEFAULT_GROUP_ADDRESS = '239.255.77.77';
export const DEFAULT_GROUP_ADDRESS_V6 = 'ff15::77';
export const DEFAULT_UDP_PORT = 47700;
export const DEFAULT_TCP_PORT = 47701;
export const MULTICAST_TTL = 1;

export const MAX_DATAGRAM = 1200;
export const NONCE_LENGTH = 16;
export const INSTANCE_LENGTH = 8;
/** A datagram older or newer than this (by its sender's clock) is refused as stale. */
export const CLOCK_WINDOW_MS = 60_000;

export const MAX_GROUP_NAME = 64;
export const MAX_DESCRIPTION = 160;
export const MAX_SERVER_NAME = 64;
export const MAX_REASON = 200;
/** A join-code proof in JOIN and ACK: a truncated HMAC-SHA256 (see invite.ts). */
export const INVITE_PROOF_LENGTH = 16;
export const MAX_FILE_NAME = 255;
/** OFFER decodes names up to this, so an overlong name is declined politely rather than cutting the link. */
export const MAX_WIRE_NAME = 4096;

export const TRANSFER_ID_LENGTH = 16;
/**
 * A member reports the partials it holds in PARTIALS frames of at most this many transfer ids (4 KiB of
 * ids: far below MAX_FRAME), and at most MAX_PARTIALS_REPORTED ids per connection, so what a server
 * answers (one CANCEL each) is bounded whatever the member sends. A member holding more reports the
 * rest on a later connection, once the first ones are reclaimed.
 */
export const MAX_PARTIALS_PER_FRAME = 256;
export const MAX_PARTIALS_REPORTED = 1024;
export const SHA256_LENGTH = 32;
/** Payload bytes per DATA frame: large enough to amortise framing, small enough to interleave control. */
export const DATA_CHUNK = 256 * 1024;
/** No frame may claim more than this; the reader refuses before buffering anything. */
export const MAX_FRAME = DATA_CHUNK + 1024;

export const ANNOUNCE_INTERVAL_MS = 5_000;
export const HEARTBEAT_INTERVAL_MS = 5_000;
/** A connection silent for this long is dead. */
export const HEARTBEAT_TIMEOUT_MS = 15_000;
