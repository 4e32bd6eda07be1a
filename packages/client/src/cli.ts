import yargs, { type ArgumentsCamelCase, type Argv, type InferredOptionTypes, type Options } from 'yargs';
import { DEFAULT_PEER_PORT } from './peer/peer-node.js';
import { hideBin } from 'yargs/helpers';
import {
  configSearchPath, ControlEndpoint, createLogger, defaultInitPath, defaultStateDir, DEFAULT_GROUP_ADDRESS, DEFAULT_UDP_PORT,
  ensurePrivateDir, ErrorCode, findConfigFile, integerOption, isGroupcastError, loadOrCreateIdentity, parseMetricsAddress, parseRate,
  checkedText, exitWithError, hideOptions, LOG_FORMATS, LOG_LEVELS, NAK_REASON_NAMES, packageVersion, writeStarterConfig, type Logger,
} from '@groupcast/shared';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { startClient } from './daemon.js';
import { formatGroupListing } from './discovery/groups-table.js';
import { listGroups } from './discovery/list-groups.js';
import { DEFAULT_KEEP_OLD } from './receive/versions.js';
import { defaultDownloadsDir, parseDuration, parsePort, parseKeepOld, resolveOptions, type ClientOptions } from './options.js';
import { ServerPin } from './discovery/pinning.js';
import { statusText } from './status-view.js';
import { readStatus } from './status-file.js';

const SHUTDOWN_GRACE_MS = 5_000;
/**
 * The daemon's exit code when the server refused every group it was to join (revoked, not authorized,
 * a wrong, used, expired or cancelled join code, an unknown group, a full group): nothing a restart would fix, so
 * the systemd unit lists it in RestartPreventExitStatus=. 77 is sysexits' EX_NOPERM ("77/NOPERM" in
 * systemctl status). Stable: scripts and units depend on it.
 */
const EXIT_REFUSED = 77;

/**
 * Every option is global: each may also come from a GROUPCAST_<NAME> variable, and with strict
 * parsing a variable meant for the daemon (GROUPCAST_JOIN) must not make `group-client id` fail.
 */
const OPTIONS = {
  join: { type: 'string', array: true, describe: 'group to join (repeatable)', group: 'Daemon:' },
  code: { type: 'string', describe: 'join code from "group-server invite": enrolls this id and pins that server', group: 'Daemon:' },
  downloads: { type: 'string', describe: `where files land (default ${defaultDownloadsDir()})`, group: 'Daemon:' },
  name: { type: 'string', describe: 'name sent to the server (default: host name)', group: 'Daemon:' },
  'trust-first-server': { type: 'boolean', default: false, describe: 'pin the first server seen and store it', group: 'Daemon:' },
  'state-dir': { type: 'string', default: defaultStateDir('client'), describe: 'identity, pin and receive log' },
  interface: { type: 'string', describe: 'multicast interface: address or name (default: first non-loopback)' },
  'group-address': { type: 'string', default: DEFAULT_GROUP_ADDRESS, describe: 'multicast group' },
  port: { type: 'number', default: DEFAULT_UDP_PORT, describe: 'control-plane UDP port', coerce: parsePort },
  server: { type: 'string', describe: 'HOST[:PORT]: also ask this server unicast (when multicast does not reach)' },
  'server-id': { type: 'string', describe: 'the server id to trust (pins it)' },
  'log-level': { choices: LOG_LEVELS, default: 'info' as (typeof LOG_LEVELS)[number], describe: 'log level' },
  'log-format': { choices: LOG_FORMATS, describe: 'log format (default: pretty on a terminal)' },
  'on-receive': { type: 'string', describe: 'run this (sh -c) after each verified file; see GROUPCAST_FILE etc. below', group: 'Daemon:' },
  'on-receive-timeout': { type: 'string', default: '60s', describe: 'stop an --on-receive command after this long', coerce: parseDuration, group: 'Daemon:' },
  'on-receive-jobs': { type: 'number', default: 2, describe: '--on-receive commands running at once', coerce: integerOption('--on-receive-jobs', 1, 64), group: 'Daemon:' },
  metrics: { type: 'string', describe: 'serve Prometheus metrics on PORT (127.0.0.1) or ADDR:PORT', coerce: checkedText(parseMetricsAddress), group: 'Daemon:' },
  'peer-port': { type: 'number', default: DEFAULT_PEER_PORT, describe: 'serve verified pieces to other members on this TCP port (0: any free port)', coerce: integerOption('--peer-port', 0, 65535), group: 'Daemon:' },
  'peer-rate': { type: 'string', describe: 'the most this member uploads to its peers, in bytes per second over every link: 20M, 500k (powers of 1000) [default: unlimited]', coerce: checkedText(parseRate), group: 'Daemon:' },
  'keep-old': { type: 'number', default: DEFAULT_KEEP_OLD, describe: 'keep this many previous versions of a file a newer distribution replaced', coerce: parseKeepOld, group: 'Daemon:' },
  peers: { type: 'boolean', default: true, describe: 'take part in peer-assisted delivery (--no-peers: take every file from the server)', group: 'Daemon:' },
} as const satisfies Record<string, Options>;

/** Validates a flag at parse time (a usage error, exit 2) and keeps the text as given. */
type Args = ArgumentsCamelCase<InferredOptionTypes<typeof OPTIONS>>;

function rootLogger(argv: Args): Logger {
  return createLogger({ name: 'group-client', level: argv.logLevel, format: argv.logFormat });
}

function clientOptions(argv: Args, log: Logger): ClientOptions {
  return {
    stateDir: argv.stateDir,
    downloads: argv.downloads ?? defaultDownloadsDir(),
    groups: argv.join,
    code: argv.code,
    interface: argv.interface,
    groupAddress: argv.groupAddress,
    port: argv.port,
    server: argv.server,
    serverId: argv.serverId,
    trustFirstServer: argv.trustFirstServer,
    name: argv.name,
    onReceive: argv.onReceive === undefined ? undefined : { command: argv.onReceive, timeoutMs: argv.onReceiveTimeout, concurrency: argv.onReceiveJobs },
    metrics: argv.metrics,
    peerPort: argv.peers ? argv.peerPort : undefined,
    peerRate: argv.peerRate === undefined ? undefined : parseRate(argv.peerRate),
    keepOld: argv.keepOld,
    log,
  };
}

/** One line for a person: the message and its causes. USAGE exits 2, everything else 1. */
function die(err: unknown): never {
  const parts: string[] = [];
  for (let cause: unknown = err; cause instanceof Error && parts.length < 4; cause = cause.cause) {
    if (!parts.some((part) => part.includes(cause.message))) parts.push(cause.message);
  }
  const message = parts.length ? parts.join(': ') : String(err);
  exitWithError('group-client', isGroupcastError(err) ? err.code : ErrorCode.INTERNAL, message, isGroupcastError(err, ErrorCode.USAGE) ? 2 : 1);
}

/**
 * The options a command uses; every other one of OPTIONS is accepted (it may come from a GROUPCAST_*
 * variable or the config file) but kept out of that command's --help.
 */
function onlyOptions<T>(argv: Argv<T>, shown: ReadonlyArray<keyof typeof OPTIONS>): Argv<T> {
  return hideOptions(argv, Object.keys(OPTIONS).filter((key) => !shown.includes(key as keyof typeof OPTIONS)));
}

/** What `groups` needs to reach a server: the network options and the pin. */
const NETWORK_OPTIONS = ['state-dir', 'interface', 'group-address', 'port', 'server', 'server-id', 'log-level', 'log-format'] as const;

async function runDaemon(argv: Args): Promise<void> {
  const log = rootLogger(argv);
  const client = await startClient(clientOptions(argv, log)).catch(die);
  log.info({ id: client.id }, 'group-client running');
  let stopping = false;
  const shutDown = (then: () => void): void => {
    stopping = true;
    setTimeout(() => {
      log.error({ graceMs: SHUTDOWN_GRACE_MS }, 'shutdown took too long: exiting anyway');
      process.exit(1);
    }, SHUTDOWN_GRACE_MS).unref();
    client.close().then(then, die);
  };
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    log.info({ signal }, 'shutting down');
    shutDown(() => process.exit(0));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  // The reason is the last line logged, so that `systemctl status` and the journal's tail show it.
  client.once('stranded', (refusals) => {
    if (stopping) return;
    const why = refusals.map(({ group, refusal }) => `${group}: ${refusal.revoked ? 'revoked' : NAK_REASON_NAMES[refusal.reason]} (${refusal.message})`).join('; ');
    shutDown(() => {
      log.fatal({ exitCode: EXIT_REFUSED, groups: refusals.map(({ group }) => group) }, `the server refused every group, nothing left to do: ${why}`);
      process.exit(EXIT_REFUSED);
    });
  });
}

async function printId(argv: Args): Promise<void> {
  try {
    await ensurePrivateDir(argv.stateDir);
    const identity = await loadOrCreateIdentity(argv.stateDir, `group-client ${hostname()}`);
    process.stdout.write(`${identity.signer.id}\n`);
  } catch (err) {
    die(err);
  }
}

async function printGroups(argv: Args & { json: boolean; timeout: number }): Promise<void> {
  const log = rootLogger(argv);
  let endpoint: ControlEndpoint | undefined;
  try {
    const options = resolveOptions(clientOptions(argv, log));
    await ensurePrivateDir(options.stateDir);
    const identity = await loadOrCreateIdentity(options.stateDir, `group-client ${hostname()}`);
    // Read the pin without storing --server-id: a query changes nothing.
    const pin = new ServerPin({ log, stateDir: options.stateDir, trustFirstServer: false });
    await pin.load();
    endpoint = new ControlEndpoint({
      log, signer: identity.signer, groupAddress: options.groupAddress, port: options.port, iface: options.iface, role: 'client',
    });
    await endpoint.open();
    log.debug({ interface: options.iface.name, address: options.iface.address }, 'asking for groups');
    const listing = await listGroups({
      log, endpoint, pinned: options.serverId ?? pin.pinned, unicast: options.unicast, timeoutMs: argv.timeout,
    });
    endpoint.close();
    if (!listing) {
      process.stderr.write(
        `group-client: no server answered within ${argv.timeout} ms on ${options.iface.name} (${options.iface.address}); `
          + 'check --interface, or name the server with --server HOST\n',
      );
      process.exit(1);
    }
    // JSON keeps every key (an unannounced name is null), so scripts see one shape.
    const json = (): string => JSON.stringify(listing, (_key, value: unknown) => value ?? null, 2);
    process.stdout.write(argv.json ? `${json()}\n` : `${formatGroupListing(listing)}\n`);
    process.exit(0);
  } catch (err) {
    endpoint?.close();
    die(err);
  }
}

async function printStatus(argv: Args & { json: boolean; recent: number }): Promise<void> {
  try {
    const report = await readStatus(argv.stateDir, argv.recent);
    process.stdout.write(argv.json ? `${JSON.stringify(report, null, 2)}\n` : `${statusText(report, Date.now())}\n`);
    process.exit(report.running ? 0 : 3);
  } catch (err) {
    die(err);
  }
}

async function init(argv: Args & { force: boolean; config?: string }): Promise<void> {
  try {
    const path = resolve(argv.config ?? defaultInitPath('client'));
    await writeStarterConfig(path, (await import('./config.js')).STARTER_CLIENT_CONFIG, argv.force);
    const found = configSearchPath('client').includes(path);
    process.stdout.write(`wrote ${path}\nnext: set "join" (and "serverId", or pass a join code once with --code), then start the member:\n  group-client${found ? '' : ` --config ${path}`}\n`);
  } catch (err) {
    die(err);
  }
}

const args = hideBin(process.argv);

/** A command-line or config problem before a command runs: exit 2, as JSON when the command was asked for JSON. */
function usageFailure(text: string): never {
  exitWithError('group-client', ErrorCode.USAGE, text, 2, '\nRun group-client --help for usage.');
}

/** The config file: --config, else GROUPCAST_CONFIG, else the first file of the search path that exists. */
const named = parseArgs({ args, options: { config: { type: 'string' } }, strict: false, allowPositionals: true }).values.config;
const configPath = findConfigFile('client', typeof named === 'string' ? resolve(named) : process.env.GROUPCAST_CONFIG);

/**
 * The config file's settings, read before yargs parses: yargs' own loader must be synchronous, and the
 * file's schema brings zod, which a member without a file (and `--version`, `status`) need not load.
 * `init` writes the file --config names, so that file is not read (it may not exist yet).
 */
async function configFileSettings(path: string | undefined): Promise<Record<string, unknown>> {
  if (args[0] === 'init' || path === undefined) return {};
  try {
    return await (await import('./config.js')).readClientConfig(path);
  } catch (err) {
    return usageFailure((err as Error).message);
  }
}

await yargs(args)
  .scriptName('group-client')
  .usage('$0 [command] [options]\n\nThe groupcast member daemon: finds the server, joins groups, receives files.')
  .env('GROUPCAST')
  .options(OPTIONS)
  .option('config', { type: 'string', describe: `config file (JSON with comments) [default: the first of ${configSearchPath('client').join(', ')} that exists]` })
  .default('config', configPath)
  .config(await configFileSettings(configPath))
  .command(['start', '$0'], 'run the member daemon (default)', (y) => y
    .example('$0 --join Developers --code CODE', 'first start with a join code from "group-server invite Developers"')
    .example('$0 --join Developers --server-id ID --downloads ~/incoming', 'join with the server id pinned by hand')
    .example('$0 --join Lab --server 10.0.0.5 --trust-first-server', 'a server multicast does not reach')
    .example('$0 --join Developers --on-receive \'logger "got $GROUPCAST_FILE"\'', 'run a command for each file'), (argv) => runDaemon(argv as Args))
  .command(
    'status',
    "show this member's server, groups and recent files (read from its state directory)",
    (y) => onlyOptions(y, ['state-dir'])
      .option('json', { type: 'boolean', default: false, describe: 'print JSON' })
      .option('recent', { type: 'number', default: 10, describe: 'how many recent files to list', coerce: integerOption('--recent', 0, 10_000) })
      .example('$0 status', 'the server, its link, the groups joined and the last files received')
      .example('$0 status --state-dir /var/lib/groupcast-client --json', "the service's member, as JSON"),
    (argv) => printStatus(argv as unknown as Args & { json: boolean; recent: number }),
  )
  .command(
    'init',
    'write a commented starter config file',
    (y) => onlyOptions(y, [])
      .option('force', { type: 'boolean', default: false, describe: 'replace an existing file' })
      .example('$0 init', `write ${defaultInitPath('client')}`)
      .example('sudo $0 init --config /etc/groupcast/client.json', 'the file the systemd unit reads'),
    (argv) => init(argv as unknown as Args & { force: boolean; config?: string }),
  )
  .command(
    'groups',
    'list the groups the server offers',
    (y) => onlyOptions(y, NETWORK_OPTIONS)
      .option('json', { type: 'boolean', default: false, describe: 'print JSON' })
      .option('timeout', { type: 'string', default: '3s', describe: 'how long to wait for an answer', coerce: parseDuration })
      .example('$0 groups --interface 192.168.1.20', 'ask on that interface')
      .example('$0 groups --server 10.0.0.5 --json', 'ask a server multicast does not reach, as JSON'),
    (argv) => printGroups(argv as unknown as Args & { json: boolean; timeout: number }),
  )
  .command('id', "print this member's id (made on first use)", (y) => onlyOptions(y, ['state-dir'])
    .example('$0 id', 'the id to give the server operator ("group-server members allow <group> <id>")'), (argv) => printId(argv as Args))
  .epilog([
    'Every option can also be set as GROUPCAST_<OPTION> (GROUPCAST_DOWNLOADS=/srv/in) or in the config file; '
      + 'a flag beats the environment, which beats the file, which beats the default.',
    '--on-receive commands get GROUPCAST_FILE, GROUPCAST_GROUP, GROUPCAST_NAME, GROUPCAST_SHA256, GROUPCAST_SIZE '
      + 'and GROUPCAST_TRANSFER; a failure or timeout is logged and the file stays.',
    `Exit codes: 0 ok, 1 failed, 2 bad usage or config, 3 (status) the daemon is not running, ${EXIT_REFUSED} (daemon) the server refused every group.`,
    'Guide: docs/OPERATIONS.md',
  ].join('\n\n'))
  .strict()
  .fail((message, err) => {
    // Parsing and validation problems only; command handlers report their own errors.
    const text = message || (err instanceof Error ? err.message : String(err));
    usageFailure(`${text}${/^Unknown argument/.test(text) ? ' (from the command line or a GROUPCAST_* variable)' : ''}`);
  })
  .help()
  .alias('help', 'h')
  .version(packageVersion(import.meta.url))
  .parseAsync();
