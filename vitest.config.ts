import { defineConfig } from 'vitest/config';

/**
 * Files that share nothing with another file while they run, so two of them run at once: those that
 * build their own network namespaces (test/harness/netns.ts; names carry the creator's pid) and start
 * their daemons inside them, and those whose daemons on loopback take their UDP control port (and any
 * fixed TCP port) from testPort() (a slice of its own per worker), the data port and peer ports from the
 * kernel (or the default peer port's fallback), and state, download and config directories of their own:
 * the Cluster fixture's (test/durability/cluster.ts), the session fixture's (test/hardening/session-tools.ts)
 * and a few that spawn their own. Every other file may use a fixed port or the default multicast port on
 * loopback, or loads the machine enough to starve a neighbour (the soak), so it runs after these, alone.
 * A file goes here only once it is known to share nothing.
 */
const ISOLATED = [
  'test/harness/netns.test.ts',
  'test/multihost/*.test.ts',
  'test/peers/swarm.test.ts',
  'test/peers/swarm-faults.test.ts',
  'test/hardening/session-backpressure.test.ts',
  'test/hardening/session-conformance.test.ts',
  'test/hardening/session-stall.test.ts',
  'test/hardening/storage-identity.test.ts',
  'test/cli/member-refusals.test.ts',
  'test/cli/invites-admin.test.ts',
  'test/security/invites.test.ts',
  'test/cli/distribute-to.test.ts',
  'test/cli/progress-terminal.test.ts',
  'test/cli/rates.test.ts',
  'test/cli/shutdown.test.ts',
  'test/cli/web-view.test.ts',
  'test/durability/cancel-pulled.test.ts',
  'test/durability/cancel-retry.test.ts',
  'test/durability/disk-full.test.ts',
  'test/durability/distribute-restart.test.ts',
  'test/durability/link-cut.test.ts',
  'test/durability/member-faults.test.ts',
  'test/durability/offline.test.ts',
  'test/durability/permission.test.ts',
  'test/durability/retention.test.ts',
  'test/durability/server-restart.test.ts',
  'test/hardening/client-orphan-partials.test.ts',
  'test/hardening/client-partials-report.test.ts',
  'test/hardening/storage-ingest.test.ts',
  'test/hardening/storage-state-disk-full.test.ts',
  'test/peers/peer-rate.test.ts',
  'test/peers/server-stream.test.ts',
  'test/peers/swarm-loopback.test.ts',
  'test/peers/swarm-visible.test.ts',
  'test/peers/swarm-waste.test.ts',
  'test/peers/tree-swarm-lan.test.ts',
  'test/trees/old-member.test.ts',
  'test/trees/tree-delta.test.ts',
  'test/trees/tree-resume.test.ts',
  'test/trees/tree-retention.test.ts',
  'test/trees/tree.test.ts',
  'test/trees/tree-swarm.test.ts',
  'test/trees/tree-swarm-compat.test.ts',
  'test/versions/delta.test.ts',
  'test/versions/replace.test.ts',
  'test/versions/swarm-delta.test.ts',
];

const timeouts = { testTimeout: 60_000, hookTimeout: 60_000 };

export default defineConfig({
  test: {
    reporters: ['default'],
    projects: [
      // groupOrder: the loopback files start only once every isolated one has ended (projects otherwise run together).
      { test: { ...timeouts, name: 'isolated', include: ISOLATED, fileParallelism: true, maxWorkers: 2, sequence: { groupOrder: 0 } } },
      {
        test: {
          ...timeouts,
          name: 'loopback',
          include: ['test/**/*.test.ts'],
          exclude: ISOLATED,
          // Integration tests start real daemons that share loopback ports and multicast groups.
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
