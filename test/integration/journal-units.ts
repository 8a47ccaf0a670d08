/** test/fixtures/journal-upgrade.mjs as the journal tests install it: an Upgrader service that logs on request. */
import { type Container, scaled } from './lab/index.js';

const NODE = '/usr/local/bin/node';
const UPGRADE = '/project/test/fixtures/journal-upgrade.mjs';

/**
 * Installs `unit` (NAME.service) running journal-upgrade.mjs on `port`, with SDH_TEST_RUN=`run` on its entries,
 * and starts it. Type=notify; `systemctl reload` runs `sd-handoff upgrade` through the control socket in
 * /run/NAME/.
 */
export async function startJournalUpgrade(c: Container, unit: string, port: number, run: string): Promise<void> {
  const name = unit.replace(/\.service$/, '');
  await c.installUnit(
    unit,
    [
      '[Service]',
      'Type=notify',
      `ExecStart=${NODE} ${UPGRADE}`,
      `ExecReload=${NODE} /project/dist/cli.js upgrade --timeout ${scaled(30)}`,
      `RuntimeDirectory=${name}`,
      `Environment=SDH_CONTROL_SOCKET=/run/${name}/control.sock PORT=${port} SDH_TEST_RUN=${run}`,
      '',
    ].join('\n'),
  );
  await c.systemctl(['start', unit], { check: true, timeoutMs: 60_000 });
}
