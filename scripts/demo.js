#!/usr/bin/env node
// npm run demo: a server and two members on loopback (interface 127.0.0.1, nothing leaves the
// machine), in temporary directories; one file distributed to the group, both copies verified,
// everything cleaned up. The same process harness drives the integration tests.
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CLIENT_BIN, SERVER_BIN, harness, testPort } from '../test/support/daemons.js';

const h = harness();
const port = String(testPort());
const network = ['--interface', '127.0.0.1', '--port', port];
const step = (text) => process.stdout.write(`\n▶ ${text}\n`);
const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

async function idOf(bin, stateDir) {
  const { stdout, code, stderr } = await h.run(bin, ['id', '--state-dir', stateDir]);
  if (code !== 0) throw new Error(stderr);
  return stdout.trim();
}

try {
  const serverState = await h.dir('server');
  const members = [];
  for (const name of ['alice', 'bob']) {
    const state = await h.dir(`${name}-state`);
    members.push({ name, state, downloads: await h.dir(`${name}-downloads`), id: await idOf(CLIENT_BIN, state) });
  }
  const serverId = await idOf(SERVER_BIN, serverState);
  step(`member ids (each printed by "group-client id"):\n  ${members.map((m) => `${m.name}: ${m.id}`).join('\n  ')}`);

  const config = join(serverState, 'groupcast.json');
  await writeFile(config, JSON.stringify({
    groups: [
      { name: 'Developers', description: 'Builds and tools', members: members.map((m) => m.id) },
      { name: 'Designers', description: 'Design assets' },
    ],
  }, null, 2));
  step(`starting group-server (id ${serverId}) on 127.0.0.1, UDP ${port}, with Developers allowing both ids`);
  const server = h.spawn('server', SERVER_BIN, ['--config', config, '--state-dir', serverState, '--tcp-port', '0', ...network]);
  await server.waitForMsg('group-server started');

  step('starting two group-client daemons that pin the server id and join Developers (no server address typed in)');
  for (const m of members) {
    h.spawn(m.name, CLIENT_BIN, ['--join', 'Developers', '--server-id', serverId, '--state-dir', m.state, '--downloads', m.downloads, '--name', m.name, ...network]);
  }
  for (const m of members) await server.waitForMsg('member online', { member: m.id });
  process.stdout.write('  both members joined and connected over mutual TLS\n');

  const file = join(serverState, 'release-notes.bin');
  const content = randomBytes(8 * 1024 * 1024);
  await writeFile(file, content);
  step(`group-server distribute Developers release-notes.bin   (8 MiB, sha256 ${sha256(content).slice(0, 16)}…)`);
  const result = await h.run(SERVER_BIN, ['distribute', 'Developers', file, '--state-dir', serverState]);
  process.stdout.write(result.stdout.replace(/^/gm, '  '));

  step('checking each member\'s copy');
  let ok = result.code === 0;
  for (const m of members) {
    const path = join(m.downloads, 'Developers', 'release-notes.bin');
    const digest = sha256(await readFile(path));
    const match = digest === sha256(content);
    ok &&= match;
    process.stdout.write(`  ${m.name}: ${path}  sha256 ${digest.slice(0, 16)}… ${match ? 'verified ✓' : 'MISMATCH ✗'}\n`);
  }
  step(ok ? 'demo complete: both copies verified' : 'demo FAILED');
  process.exitCode = ok ? 0 : 1;
} catch (err) {
  process.stderr.write(`demo failed: ${err.stack ?? err}\n`);
  process.exitCode = 1;
} finally {
  await h.cleanup();
}
