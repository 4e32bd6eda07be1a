import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { z } from 'zod';
import {
  DEFAULT_GROUP_ADDRESS, DEFAULT_TCP_PORT, DEFAULT_UDP_PORT, ErrorCode, GroupcastError, MAX_DESCRIPTION, MAX_SERVER_NAME,
  parsePeerId, validateGroupName,
} from '@groupcast/shared';

/**
 * The server's settings. Precedence: flags > GROUPCAST_* environment > config file > built-in
 * defaults. The config file is JSON; its keys are the flags' names in camelCase, plus `groups`.
 */
const peerId = z.string().transform((text, ctx) => {
  try {
    return parsePeerId(text);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
    return z.NEVER;
  }
});

const groupName = z.string().transform((text, ctx) => {
  try {
    return validateGroupName(text);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
    return z.NEVER;
  }
});

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
  stateDir: z.string().min(1).optional(),
  interface: z.string().min(1).optional(),
  groupAddress: z.string().min(1).optional(),
  port: port.optional(),
  tcpPort: z.number().int().min(0).max(65535).optional(),
  concurrency: z.number().int().min(1).max(1024).optional(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).optional(),
});

export type GroupConfig = z.output<typeof groupSchema>;
export type ConfigFile = z.output<typeof fileSchema>;

export const DEFAULT_GROUPS: GroupConfig[] = [
  { name: 'Developers', description: 'Source, builds and tools for developers', open: false, members: [] },
  { name: 'Designers', description: 'Design assets and fonts', open: false, members: [] },
];

export interface ServerSettings {
  name: string;
  groups: GroupConfig[];
  stateDir: string;
  interface: string | undefined;
  groupAddress: string;
  port: number;
  tcpPort: number;
  concurrency: number;
  logLevel: NonNullable<ConfigFile['logLevel']>;
  /** True when no config file named the groups, so the server runs on the built-in ones. */
  defaultGroups: boolean;
}

function describeIssues(error: z.ZodError): string {
  return error.issues.map((issue) => `${issue.path.join('.') || '(top level)'}: ${issue.message}`).join('; ');
}

export async function loadConfigFile(path: string): Promise<ConfigFile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new GroupcastError(ErrorCode.CONFIG, `cannot read config ${path}: ${(err as Error).message}`, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new GroupcastError(ErrorCode.CONFIG, `config ${path} is not JSON: ${(err as Error).message}`, { cause: err });
  }
  const parsed = fileSchema.safeParse(json);
  if (!parsed.success) throw new GroupcastError(ErrorCode.CONFIG, `config ${path}: ${describeIssues(parsed.error)}`);
  return parsed.data;
}

function definedOnly<T extends object>(values: T): { [K in keyof T]?: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(values).filter(([, value]) => value !== undefined)) as never;
}

type Overrides = { [K in keyof Omit<ServerSettings, 'groups' | 'defaultGroups'>]?: ServerSettings[K] | undefined };

/** Merges the layers; `flags` holds only what was given on the command line or in the environment. */
export function resolveSettings(file: ConfigFile, flags: Overrides, defaultStateDir: string): ServerSettings {
  const { groups, ...fileRest } = file;
  return {
    name: hostname().slice(0, MAX_SERVER_NAME),
    stateDir: defaultStateDir,
    interface: undefined,
    groupAddress: DEFAULT_GROUP_ADDRESS,
    port: DEFAULT_UDP_PORT,
    tcpPort: DEFAULT_TCP_PORT,
    concurrency: 8,
    logLevel: 'info',
    ...definedOnly(fileRest),
    ...definedOnly(flags),
    groups: groups ?? DEFAULT_GROUPS,
    defaultGroups: groups === undefined,
  };
}
