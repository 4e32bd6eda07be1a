// The server's config file schema (zod), apart from config.ts so that an operator command run without a
// config file does not load zod.
import { z } from 'zod';
import {
  LOG_FORMATS, LOG_LEVELS, MAX_DESCRIPTION, MAX_SERVER_NAME, parseDuration, parseMetricsAddress, parsePeerId, parseRate, validateGroupName,
} from '@groupcast/shared';
import { absolutePath, loadConfigFile as loadConfig } from '@groupcast/shared/config-schema';
import { parseWebToken } from './web/access.js';
import { BACKLOG_POLICIES } from './delivery/backlog-policy.js';
import { parseHeartbeatTimeout } from './delivery/heartbeat-timeout.js';
import { MAX_OPEN_MEMBERS_LIMIT } from './config.js';

/** A zod string checked by one of shared's validators, so the rule lives in one place. */
function validated<T>(check: (text: string) => T) {
  return z.string().transform((text, ctx) => {
    try {
      return check(text);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
      return z.NEVER;
    }
  });
}

const peerId = validated(parsePeerId);
const groupName = validated(validateGroupName);

const port = z.number().int().min(1).max(65535);

export const groupSchema = z.strictObject({
  name: groupName,
  description: z.string().max(MAX_DESCRIPTION).default(''),
  open: z.boolean().default(false),
  members: z.array(peerId).default([]),
});

const fileSchema = z.strictObject({
  name: z.string().min(1).max(MAX_SERVER_NAME).optional(),
  groups: z
    .array(groupSchema)
    .min(1)
    .refine((groups) => new Set(groups.map((g) => g.name)).size === groups.length, 'group names must be unique')
    .optional(),
  stateDir: absolutePath.optional(),
  interface: z.string().min(1).optional(),
  groupAddress: z.string().min(1).optional(),
  port: port.optional(),
  tcpPort: z.number().int().min(0).max(65535).optional(),
  advertisePort: port.optional(),
  concurrency: z.number().int().min(1).max(1024).optional(),
  rate: validated(parseRate).optional(),
  logLevel: z.enum(LOG_LEVELS).optional(),
  logFormat: z.enum(LOG_FORMATS).optional(),
  keep: validated(parseDuration).optional(),
  backlog: z.enum(BACKLOG_POLICIES).optional(),
  maxOpenMembers: z.number().int().min(1).max(MAX_OPEN_MEMBERS_LIMIT).optional(),
  openMemberExpiry: validated(parseDuration).optional(),
  heartbeatTimeout: validated(parseHeartbeatTimeout).optional(),
  metrics: validated((text) => (parseMetricsAddress(text), text)).optional(),
  webToken: validated(parseWebToken).optional(),
});

export type GroupConfig = z.output<typeof groupSchema>;
export type ConfigFile = z.output<typeof fileSchema>;

/** Reads and validates a server config file (JSON with comments); errors name the file and the field. */
export function loadConfigFile(path: string): Promise<ConfigFile> {
  return loadConfig(path, fileSchema);
}
