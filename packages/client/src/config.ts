import { z } from 'zod';
import { MAX_KEEP_OLD } from './receive/versions.js';
import { LOG_FORMATS, LOG_LEVELS, parseDuration, parseMetricsAddress, parseRate } from '@groupcast/shared';
import { absolutePath, loadConfigFile } from '@groupcast/shared/config-schema';

/** A string that one of shared's parsers accepts; kept as written, since the flag's own parsing applies after. */
function parsed(check: (text: string) => unknown) {
  return z.string().superRefine((text, ctx) => {
    try {
      check(text);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
    }
  });
}

/**
 * The member's config file: JSON with comments; its keys are the flags' names in camelCase. The join
 * code is left out on purpose: it is a secret for one use, so it comes from --code or GROUPCAST_CODE.
 */
export const clientConfigSchema = z.strictObject({
  join: z.array(z.string().min(1)).optional(),
  downloads: absolutePath.optional(),
  name: z.string().min(1).optional(),
  trustFirstServer: z.boolean().optional(),
  stateDir: absolutePath.optional(),
  interface: z.string().min(1).optional(),
  groupAddress: z.string().min(1).optional(),
  port: z.number().int().min(1).max(65535).optional(),
  server: z.string().min(1).optional(),
  serverId: z.string().min(1).optional(),
  onReceive: z.string().min(1).optional(),
  onReceiveTimeout: parsed(parseDuration).optional(),
  onReceiveJobs: z.number().int().min(1).max(64).optional(),
  metrics: parsed(parseMetricsAddress).optional(),
  peerRate: parsed(parseRate).optional(),
  keepOld: z.number().int().min(0).max(MAX_KEEP_OLD).optional(),
  logLevel: z.enum(LOG_LEVELS).optional(),
  logFormat: z.enum(LOG_FORMATS).optional(),
});

export type ClientConfig = z.output<typeof clientConfigSchema>;

/** The member's config file, read before its command line is parsed: errors are CONFIG and name the file and the field. */
export function readClientConfig(path: string): Promise<ClientConfig> {
  return loadConfigFile(path, clientConfigSchema);
}

/** What `group-client init` writes; a test uncomments every setting and checks it against the schema. */
export const STARTER_CLIENT_CONFIG = `// group-client configuration: JSON with comments (trailing commas are fine too).
//
// Precedence: a flag (--downloads DIR) beats an environment variable (GROUPCAST_DOWNLOADS=DIR), which
// beats this file, which beats the built-in default. Remove the // in front of a setting to use it.
// A join code from "group-server invite" is not kept here: pass it once with --code.
{
  // Groups to join (the server lists them: "group-client groups").
  "join": ["Developers"],

  // Where files land, as <downloads>/<group>/<file>. Must be absolute.
  // Default: $XDG_DOWNLOAD_DIR/groupcast or ~/Downloads/groupcast.
  // "downloads": "/srv/groupcast/incoming",

  // The server to trust: its id, from "group-server id". A join code pins it for you instead.
  // "serverId": "AAAAAAA-BBBBBBB-…",
  // Or pin the first server that answers (only on a network you trust):
  // "trustFirstServer": true,

  // Name this member shows to the operator. Default: this host's name.
  // "name": "build-agent-3",

  // Interface for multicast, by address or name ("eth0"). Default: the first non-loopback one.
  // "interface": "192.168.1.23",

  // When multicast does not reach the server (another subnet, a VPN): its address, HOST or HOST:PORT.
  // "server": "192.168.1.10",

  // Multicast group and UDP port: the same as the server's.
  // "groupAddress": "239.255.77.77",
  // "port": 47700,

  // Identity, pin, received log and status. Must be absolute. Default: $STATE_DIRECTORY under
  // systemd, else $XDG_STATE_HOME/groupcast/client (~/.local/state/groupcast/client).
  // "stateDir": "/var/lib/groupcast-client",

  // A command run (sh -c) after each verified file, with GROUPCAST_FILE, GROUPCAST_GROUP,
  // GROUPCAST_NAME, GROUPCAST_SHA256, GROUPCAST_SIZE and GROUPCAST_TRANSFER in its environment.
  // Its failure or timeout is logged; the file stays either way.
  // "onReceive": "logger -t groupcast \\"got $GROUPCAST_FILE\\"",
  // "onReceiveTimeout": "60s",
  // "onReceiveJobs": 2,

  // Prometheus endpoint: "9478" means 127.0.0.1:9478; "ADDR:PORT" to listen elsewhere. Off unless set.
  // "metrics": "9478",

  // The most this member uploads to other members (peer-assisted delivery), in bytes per second over
  // every peer link: "20M", "500k" (powers of 1000). Unlimited unless set.
  // "peerRate": "20M",

  // A newer distribution of a file groupcast placed (and nobody edited since) replaces it; this many
  // previous versions are kept in <downloads>/.groupcast-versions/<group>/<file>/ for rollback. Default 0.
  // "keepOld": 2,

  // fatal, error, warn, info, debug, trace or silent; json or pretty.
  // "logLevel": "info",
  // "logFormat": "json",
}
`;
