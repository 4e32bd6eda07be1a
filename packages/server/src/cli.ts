import { resolve } from 'node:path';
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import {
  configSearchPath, createLogger, defaultInitPath, defaultStateDir, ErrorCode, findConfigFile, integerOption, isGroupcastError,
  checkedText, exitWithError, formatDuration, GroupcastError, hideOptions, packageVersion, LOG_FORMATS, LOG_LEVELS, loadOrCreateIdentity, writeStarterConfig, parseDuration, parseMetricsAddress, parseRate, ensurePrivateDir, type LogFormat,
} from '@groupcast/shared';
import { MAX_OPEN_MEMBERS_LIMIT, resolveSettings, type ServerSettings } from './config.js';
import type { ConfigFile } from './config-schema.js';
import { callDaemon } from './operator/control-socket.js';
import type { DistributeFlags } from './operator/distribute-view.js';
import { DaemonLost, RECONNECT_LIMIT_MS } from './operator/reconnect.js';
import { MAX_INVITE_USES, type CreatedInvite, type InviteView } from './control/invites.js';
import type { DeliveryChange, GroupView, MemberView, PruneResult, StatusView } from './operator/operations.js';
import { BACKLOG_POLICIES, type BacklogPolicy } from './delivery/backlog-policy.js';
import { parseHeartbeatTimeout } from './delivery/heartbeat-timeout.js';
import { changeText, pruneText } from './operator/change-view.js';
import { STARTER_CONFIG } from './operator/starter-config.js';
import { parseWebToken } from './web/access.js';
import { groupsTable, invitesTable, membersTable, statusText } from './operator/status-view.js';

/** Exit codes the operator's scripts can rely on. */
export const EXIT = { OK: 0, FAILED: 1, USAGE: 2, PENDING: 3, NO_MEMBERS: 4, DAEMON_LOST: 5 } as const;

interface CommonFlags {
  config?: string;
  stateDir?: string;
  interface?: string;
  groupAddress?: string;
  port?: number;
  tcpPort?: number;
  advertisePort?: number;
  concurrency?: number;
  rate?: string;
  name?: string;
  logLevel?: ServerSettings['logLevel'];
  logFormat?: LogFormat;
  keep?: string;
  backlog?: BacklogPolicy;
  maxOpenMembers?: number;
  openMemberExpiry?: string;
  heartbeatTimeout?: string;
  metrics?: string;
  webToken?: string;
  json?: boolean;
}

async function settingsFrom(flags: CommonFlags): Promise<ServerSettings> {
  const path = findConfigFile('server', flags.config === undefined ? undefined : resolve(flags.config));
  // Loaded only when there is a file to read: the schema brings zod (see config-schema.ts).
  const file: ConfigFile = path ? await (await import('./config-schema.js')).loadConfigFile(path) : {};
  return resolveSettings(file, {
    name: flags.name,
    stateDir: flags.stateDir,
    interface: flags.interface,
    groupAddress: flags.groupAddress,
    port: flags.port,
    tcpPort: flags.tcpPort,
    advertisePort: flags.advertisePort,
    concurrency: flags.concurrency,
    rate: flags.rate === undefined ? undefined : parseRate(flags.rate),
    logLevel: flags.logLevel,
    logFormat: flags.logFormat,
    keepMs: flags.keep === undefined ? undefined : parseDuration(flags.keep),
    backlog: flags.backlog,
    maxOpenMembers: flags.maxOpenMembers,
    openMemberExpiryMs: flags.openMemberExpiry === undefined ? undefined : parseDuration(flags.openMemberExpiry),
    heartbeatTimeoutMs: flags.heartbeatTimeout === undefined ? undefined : parseDuration(flags.heartbeatTimeout),
    metrics: flags.metrics,
    webToken: flags.webToken,
  }, defaultStateDir('server'), path);
}

async function start(flags: CommonFlags): Promise<void> {
  const settings = await settingsFrom(flags);
  const log = createLogger({ name: 'group-server', level: settings.logLevel, format: settings.logFormat });
  // The daemon's modules are loaded by the one command that runs it, so that the operator's commands start fast.
  const { startServer } = await import('./daemon.js');
  const server = await startServer(settings, log);
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    const deadline = setTimeout(() => {
      log.error('shutdown took too long; exiting');
      process.exit(EXIT.FAILED);
    }, 10_000);
    deadline.unref();
    server.close().then(() => process.exit(EXIT.OK), (err: unknown) => {
      log.error({ err }, 'shutdown failed');
      process.exit(EXIT.FAILED);
    });
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

function print(json: boolean | undefined, value: unknown, human: () => string): void {
  process.stdout.write(`${json ? JSON.stringify(value, null, 2) : human()}\n`);
}

const DAEMON = 'Daemon options (start):';

/**
 * Every option is global: each may also come from a GROUPCAST_<NAME> variable, and with strict
 * parsing a variable meant for the daemon (GROUPCAST_INTERFACE) must not make `status` fail.
 */
function options<T>(argv: Argv<T>) {
  return argv
    .option('config', { type: 'string', describe: `config file (JSON with comments) [default: the first of ${configSearchPath('server').join(', ')} that exists]` })
    .option('state-dir', { type: 'string', describe: `state directory [default: ${defaultStateDir('server')}]` })
    .option('log-level', { choices: LOG_LEVELS, describe: 'log level [default: info]' })
    .option('log-format', { choices: LOG_FORMATS, describe: 'log format [default: pretty on a terminal, else json]' })
    .option('json', { type: 'boolean', describe: 'machine-readable output' })
    .option('interface', { type: 'string', group: DAEMON, describe: 'multicast interface (address or name) [default: first non-loopback]' })
    .option('group-address', { type: 'string', group: DAEMON, describe: 'multicast group [default: 239.255.77.77]' })
    .option('port', { group: DAEMON, coerce: integerOption('--port', 1, 65535), describe: 'UDP control port [default: 47700]' })
    .option('tcp-port', { group: DAEMON, coerce: integerOption('--tcp-port', 0, 65535), describe: 'TLS data port, 0 for any free one [default: 47701]' })
    .option('advertise-port', { type: 'number', group: DAEMON, coerce: integerOption('--advertise-port', 1, 65535), describe: 'TCP port members are told to connect to, when a port forward sits in front of --tcp-port [default: the --tcp-port in use]' })
    .option('concurrency', { group: DAEMON, coerce: integerOption('--concurrency', 1, 1024), describe: 'streamed transfers in flight at once; pulled ones (peer-assisted) have their own 256 [default: 8]' })
    .option('rate', { type: 'string', group: DAEMON, coerce: checkedText(parseRate), describe: 'the most the server uploads, in bytes per second over every member and distribution: 50M, 800k, 1G (powers of 1000) [default: unlimited]' })
    .option('name', { type: 'string', group: DAEMON, describe: 'server name in announcements [default: host name]' })
    .option('keep', { type: 'string', group: DAEMON, coerce: checkedText(parseDuration), describe: 'how long undelivered files wait for offline members (and the backlog is kept for new ones) [default: 7d]' })
    .option('backlog', { choices: BACKLOG_POLICIES, group: DAEMON, describe: 'what a member that joins later gets of earlier files: none, latest (newest file of each name), all [default: latest]' })
    .option('max-open-members', { group: DAEMON, coerce: integerOption('--max-open-members', 1, MAX_OPEN_MEMBERS_LIMIT), describe: 'members an open group takes besides its configured and allowed ones; later JOINs are refused "group full" [default: 1000]' })
    .option('open-member-expiry', { type: 'string', group: DAEMON, coerce: checkedText(parseDuration), describe: 'how long an open group keeps a member that neither connects nor sends anything [default: 30d]' })
    .option('heartbeat-timeout', { type: 'string', group: DAEMON, coerce: checkedText(parseHeartbeatTimeout), describe: 'a member connection silent this long is dead: its delivery goes back to pending; PINGs go out every third of it (at least every 5s), 3s … 15s [default: 15s]' })
    .option('metrics', { type: 'string', group: DAEMON, coerce: checkedText(parseMetricsAddress), describe: 'serve Prometheus metrics (/metrics) and the live web view (/) on PORT (127.0.0.1) or ADDR:PORT [default: off]' })
    .option('web-token', { type: 'string', group: DAEMON, coerce: checkedText(parseWebToken), describe: 'token every request to --metrics must carry (?token= once, or Authorization: Bearer); required off loopback. Prefer GROUPCAST_WEB_TOKEN or the config file: flags show in ps' });
}

// Every option in the DAEMON group, so that it stays out of the other commands' help.
const DAEMON_OPTIONS = [
  'interface', 'group-address', 'port', 'tcp-port', 'advertise-port', 'concurrency', 'rate', 'name', 'keep', 'backlog', 'max-open-members', 'open-member-expiry',
  'heartbeat-timeout', 'metrics', 'web-token',
] as const;

/**
 * The operator's commands accept the daemon's options (see above) but do not list them in their help;
 * `own`: those the command gives a meaning of its own (distribute --rate).
 */
function operatorCommand<T>(argv: Argv<T>, own: ReadonlyArray<(typeof DAEMON_OPTIONS)[number]> = []): Argv<T> {
  return hideOptions(argv, DAEMON_OPTIONS.filter((key) => !own.includes(key)));
}

/** `cancel` and `retry`: a transfer, and optionally the one member whose delivery of it is meant. */
function transferCommand<T>(argv: Argv<T>) {
  return operatorCommand(argv)
    .positional('transfer', { type: 'string', demandOption: true, describe: 'the transfer id status shows, or its first 6+ characters' })
    .option('member', { type: 'string', describe: 'only the delivery to this member (full id or 7+ characters of it)' });
}

/** Validates a flag at parse time (a usage error, exit 2) and keeps the text as given. */
async function stateDirOf(flags: CommonFlags): Promise<string> {
  return (await settingsFrom(flags)).stateDir;
}

const now = (): number => Date.now();

const cli = options(yargs(hideBin(process.argv)))
  .scriptName('group-server')
  .env('GROUPCAST')
  .strict()
  .usage('$0 [command] [options]\n\nAnnounces groups on the LAN and pushes files to their members. Without a command, runs the daemon.')
  .command(['start', '$0'], 'run the server daemon (default)', (y) => y
    .example('$0 --interface 192.168.1.10', 'run on the defaults, multicast on that interface')
    .example('$0 --config /etc/groupcast/server.json --metrics 9477', 'run from a config file, metrics on 127.0.0.1:9477'), (flags) => start(flags as CommonFlags))
  .command(
    'init',
    'write a commented starter config file',
    (y) => operatorCommand(y)
      .option('force', { type: 'boolean', describe: 'replace an existing file' })
      .example('$0 init', `write ${defaultInitPath('server')}`)
      .example('sudo $0 init --config /etc/groupcast/server.json', 'the file the systemd unit reads'),
    async (flags) => {
      const path = resolve(flags.config ?? defaultInitPath('server'));
      await writeStarterConfig(path, STARTER_CONFIG, flags.force ?? false);
      const found = configSearchPath('server').includes(path);
      print(flags.json, { path }, () => [
        `wrote ${path}`,
        'next: set "interface", list member ids in "groups" (or invite members later), then start the server:',
        `  group-server${found ? '' : ` --config ${path}`}`,
      ].join('\n'));
    },
  )
  .command(
    'distribute <group> <files..>',
    'send files to every member of a group (talks to the running daemon)',
    (y) => operatorCommand(y, ['rate'])
      .positional('group', { type: 'string', demandOption: true })
      .positional('files', { type: 'string', array: true, demandOption: true })
      .option('wait-all', { type: 'boolean', describe: 'also wait for members that are offline now' })
      .option('timeout', { type: 'string', coerce: checkedText(parseDuration), describe: 'stop waiting after this long (e.g. 10m)' })
      .option('progress-interval', { type: 'string', default: '5s', coerce: checkedText(parseDuration), describe: 'without a terminal: a progress line per member this often (0: every update)' })
      .option('rate', { type: 'string', coerce: checkedText(parseRate), describe: 'the most these files take of the server\'s upload, in bytes per second over all their members (under the daemon\'s --rate): 20M, 500k [default: no cap of their own]' })
      .option('to', { type: 'string', array: true, describe: 'only these members of the group: names as status shows them, or ids (7+ characters); the others, and members joining later, get nothing' })
      .option('reconnect-timeout', { type: 'string', coerce: checkedText(parseDuration), describe: `if the daemon goes away (a restart), how long to try to reach it again before giving up with exit code 5 [default: ${formatDuration(RECONNECT_LIMIT_MS)}]` })
      .example('$0 distribute Developers ./build.tar.gz', 'push a file to every member of Developers')
      .example('$0 distribute Designers a.psd b.psd --wait-all --timeout 1h', 'wait up to an hour for offline members')
      .example('$0 distribute Developers ./build.tar.gz --json | jq .exitCode', 'one JSON document for scripts')
      .example('$0 distribute Developers ./fix.patch --to alice PKHMN3L', 'only to the member named alice and the one whose id starts PKHMN3L'),
    async (flags) => {
      const options: DistributeFlags = {
        group: flags.group,
        files: flags.files.map((file) => resolve(file)),
        waitAll: flags.waitAll ?? false,
        json: flags.json ?? false,
        progressIntervalMs: parseDuration(flags.progressInterval),
        ...(flags.timeout ? { timeoutMs: parseDuration(flags.timeout) } : {}),
        ...(flags.rate ? { rate: parseRate(flags.rate) } : {}),
        ...(flags.to ? { to: flags.to } : {}),
        ...(flags.reconnectTimeout ? { reconnectLimitMs: parseDuration(flags.reconnectTimeout) } : {}),
      };
      const { runDistribute } = await import('./operator/distribute-view.js');
      process.exitCode = await runDistribute(await stateDirOf(flags as CommonFlags), options);
    },
  )
  .command('status', 'show the server, its groups, members and recent transfers', (y) => operatorCommand(y)
    .example('$0 status', 'an overview for people')
    .example('$0 status --json | jq \'.members[] | select(.online | not) | .id\'', 'ids of offline members'), async (flags) => {
    const status = await callDaemon<StatusView>(await stateDirOf(flags as CommonFlags), 'status', {});
    print(flags.json, status, () => statusText(status, now()));
  })
  .command('groups', 'list the groups, with how many members joined and are online', (y) => operatorCommand(y)
    .example('$0 groups --json', 'the same as JSON'), async (flags) => {
    const groups = await callDaemon<GroupView[]>(await stateDirOf(flags as CommonFlags), 'groups', {});
    print(flags.json, groups, () => groupsTable(groups));
  })
  .command('members [action] [group] [id]', 'list members, or allow / revoke one in a group', (y) => operatorCommand(y)
    .positional('action', { choices: ['list', 'allow', 'revoke'] as const, default: 'list' as const })
    .positional('group', { type: 'string' })
    .positional('id', { type: 'string' })
    .example('$0 members', 'every known member: id, name, address, online since / last seen, groups, pending and failed deliveries')
    .example('$0 members allow Developers ABCDEFG-…', 'let a member id into Developers')
    .example('$0 members revoke Developers ABCDEFG', 'take it out again (queued files for it fail); the 7-character short id of a known member is enough'), async (flags) => {
    const stateDir = await stateDirOf(flags as CommonFlags);
    if (flags.action === 'list') {
      const members = await callDaemon<MemberView[]>(stateDir, 'members', {});
      print(flags.json, members, () => membersTable(members, now()));
      return;
    }
    if (!flags.group || !flags.id) throw new GroupcastError(ErrorCode.USAGE, `members ${flags.action} needs <group> <id>`);
    const result = await callDaemon<{ id: string }>(stateDir, flags.action, { group: flags.group, id: flags.id });
    print(flags.json, result, () => `${flags.action === 'allow' ? 'allowed' : 'revoked'} ${result.id} in ${flags.group}`);
  })
  .command('invite <group>', 'make a one-time join code for a group (enrolls the member that uses it, and pins this server for it)', (y) => operatorCommand(y)
    .positional('group', { type: 'string', demandOption: true })
    .option('uses', { type: 'number', default: 1, coerce: integerOption('--uses', 1, MAX_INVITE_USES), describe: 'how many members may use the code' })
    .option('ttl', { type: 'string', default: '1h', coerce: checkedText(parseDuration), describe: 'how long the code is valid (at most 30d)' })
    .example('$0 invite Developers', 'a code for one member, valid for an hour')
    .example('$0 invite Lab --uses 20 --ttl 1d', 'one code for a room of 20 machines'), async (flags) => {
    const invite = await callDaemon<CreatedInvite & { server: string }>(await stateDirOf(flags as CommonFlags), 'invite', {
      group: flags.group, uses: flags.uses, ttlMs: parseDuration(flags.ttl),
    });
    print(flags.json, invite, () => [
      `join code for ${invite.group}: ${invite.code}   (invite ${invite.invite}: "group-server invites cancel ${invite.invite}" withdraws it)`,
      `  ${invite.uses === 1 ? 'one member' : `up to ${invite.uses} members`}, until ${new Date(invite.expiresAt).toISOString()}; this server is ${invite.server}`,
      'on the member:',
      `  group-client --join ${invite.group} --code ${invite.code} --downloads DIR`,
    ].join('\n'));
  })
  .command('invites [action] [invite]', 'list the invites (never their codes), or cancel one by its invite id', (y) => operatorCommand(y)
    .positional('action', { choices: ['list', 'cancel'] as const, default: 'list' as const })
    .positional('invite', { type: 'string', describe: 'with cancel: the invite id printed by "invite", or its first 4+ characters' })
    .example('$0 invites', 'group, state, uses left, expiry and creation of every invite')
    .example('$0 invites cancel 3f9a', 'refuse that code from now on (members it enrolled stay)'), async (flags) => {
    const stateDir = await stateDirOf(flags as CommonFlags);
    if (flags.action === 'list') {
      const invites = await callDaemon<InviteView[]>(stateDir, 'invites', {});
      print(flags.json, invites, () => invitesTable(invites, now()));
      return;
    }
    if (!flags.invite) throw new GroupcastError(ErrorCode.USAGE, 'invites cancel needs <invite> (the id "group-server invites" lists)');
    const cancelled = await callDaemon<InviteView>(stateDir, 'cancelInvite', { invite: flags.invite });
    print(flags.json, cancelled, () => `cancelled invite ${cancelled.invite} for ${cancelled.group}: its code is refused from now on`);
  })
  .command('cancel <transfer>', 'stop a transfer: what is in flight is cancelled (the member deletes its partial), what is pending fails', (y) => transferCommand(y)
    .example('$0 cancel 3f9a0c', 'cancel every delivery of that transfer not done yet')
    .example('$0 cancel 3f9a0c --member ABCDEFG', 'only the one to that member'), async (flags) => {
    const result = await callDaemon<DeliveryChange>(await stateDirOf(flags as CommonFlags), 'cancel', { transfer: flags.transfer, member: flags.member });
    print(flags.json, result, () => changeText('cancelled', result));
  })
  .command('retry <transfer>', 'send a transfer again to the members it failed for (or was cancelled for), attempts reset', (y) => transferCommand(y)
    .example('$0 retry 3f9a0c', 'every failed delivery of that transfer')
    .example('$0 retry 3f9a0c --member ABCDEFG', 'only the one to that member, once its disk has room again'), async (flags) => {
    const result = await callDaemon<DeliveryChange>(await stateDirOf(flags as CommonFlags), 'retry', { transfer: flags.transfer, member: flags.member });
    print(flags.json, result, () => changeText('queued again', result));
  })
  .command('prune', 'remove now the stored files retention would remove (deliveries ended, not kept for the backlog)', (y) => operatorCommand(y)
    .example('$0 prune --json', 'files and bytes removed, as JSON'), async (flags) => {
    const result = await callDaemon<PruneResult>(await stateDirOf(flags as CommonFlags), 'prune', {});
    print(flags.json, result, () => pruneText(result));
  })
  .command('id', "print this server's id (members pin it with --server-id)", (y) => operatorCommand(y), async (flags) => {
    const stateDir = await stateDirOf(flags as CommonFlags);
    await ensurePrivateDir(stateDir);
    const identity = await loadOrCreateIdentity(stateDir, 'group-server');
    print(flags.json, { id: identity.signer.id }, () => identity.signer.id);
  })
  .epilog([
    'Every option can also be set as GROUPCAST_<OPTION> (GROUPCAST_STATE_DIR=/var/lib/groupcast-server) or in the '
      + 'config file; a flag beats the environment, which beats the file, which beats the default.',
    'Exit codes: 0 ok, 1 failed, 2 bad usage or config, 3 (distribute) members still pending, 4 nobody to send to, '
      + `5 (distribute) lost the daemon and it did not come back within ${formatDuration(RECONNECT_LIMIT_MS)}.`,
    'Guide: docs/OPERATIONS.md',
  ].join('\n\n'))
  .demandCommand(0)
  .help()
  .alias('h', 'help')
  .version(packageVersion(import.meta.url))
  .fail((message, err) => {
    // Errors from a command's handler go to the catch below; yargs' own (parsing, coerce) are usage.
    if (err && err.name !== 'YError') throw err;
    fail(ErrorCode.USAGE, message || err?.message || 'bad usage', EXIT.USAGE, '\nRun "group-server --help" for usage.');
  });

/** Errors that mean the command line or config is wrong (exit 2), as the README promises; the rest exit 1. */
const USAGE_CODES: ReadonlySet<ErrorCode> = new Set([ErrorCode.CONFIG, ErrorCode.USAGE, ErrorCode.BAD_ID, ErrorCode.UNKNOWN_GROUP]);

function exitCodeOf(err: unknown): number {
  if (err instanceof DaemonLost) return EXIT.DAEMON_LOST;
  return isGroupcastError(err) && USAGE_CODES.has(err.code) ? EXIT.USAGE : EXIT.FAILED;
}

/** Reports an error (as JSON on stdout with --json, see errorJson) and exits. */
function fail(code: ErrorCode, message: string, exitCode: number, hint = ''): never {
  exitWithError('group-server', code, message, exitCode, hint);
}

try {
  await cli.parseAsync();
} catch (err) {
  const code = isGroupcastError(err) ? err.code : ErrorCode.INTERNAL;
  fail(code, (err as Error).message, exitCodeOf(err));
}
