import { describe, expect, it } from 'vitest';
import { Systemd, busError, loadDbusNext, plain, unitInterface } from '../../src/dbus.js';
import { SdHandoffError } from '../../src/errors.js';
import { FakeBus } from './fake-bus.js';

async function setup(timeoutMs?: number): Promise<{ bus: FakeBus; sd: Systemd }> {
  const bus = new FakeBus();
  bus.addUnit('app.service', { TriggeredBy: ['app.socket'] }, { MainPID: 100, StatusText: 'serving', NFileDescriptorStore: 2, Result: 'success', ExecMainStatus: 0, Environment: ['A=1'] });
  bus.addUnit('app.socket', { SubState: 'listening', Triggers: ['app.service'] }, { Listen: [['Stream', '127.0.0.1:8080'], ['Datagram', '[::1]:53']], Result: 'success' });
  const sd = await Systemd.connect({ bus, ...(timeoutMs ? { timeoutMs } : {}) });
  return { bus, sd };
}

async function rejection(p: Promise<unknown>): Promise<SdHandoffError> {
  try {
    await p;
  } catch (err) {
    return err as SdHandoffError;
  }
  throw new Error('expected a rejection');
}

describe('Systemd (fake bus)', () => {
  it('getUnit: Unit and Service properties, typed', async () => {
    const { sd } = await setup();
    expect(await sd.getUnit('app.service')).toEqual({
      id: 'app.service',
      path: FakeBus.pathOf('app.service'),
      description: 'app.service',
      loadState: 'loaded',
      activeState: 'active',
      subState: 'running',
      result: 'success',
      reloadResult: '',
      mainPid: 100,
      statusText: 'serving',
      nFileDescriptorStore: 2,
      execMainStatus: 0,
      execMainCode: 0,
      triggeredBy: ['app.socket'],
      triggers: [],
      environment: ['A=1'],
    });
  });

  it('a unit systemd cannot find (LoadState not-found, or NoSuchUnit from the bus) is SDH_NO_SUCH_UNIT', async () => {
    const { sd } = await setup();
    const e = await rejection(sd.getUnit('nope.service'));
    expect(e).toBeInstanceOf(SdHandoffError);
    expect([e.code, e.message]).toEqual(['SDH_NO_SUCH_UNIT', 'no such unit: nope.service']);
    const r = await rejection(sd.reload('nope.service'));
    expect([r.code, r.message]).toEqual(['SDH_NO_SUCH_UNIT', 'no such unit: nope.service']);
  });

  it('other bus errors are SDH_DBUS with dbusName and systemd\'s text', async () => {
    const { bus, sd } = await setup();
    bus.errors.set('ReloadUnit', ['org.freedesktop.systemd1.UnitInactive', 'Unit app.service is not active, cannot reload.']);
    const e = await rejection(sd.reload('app.service'));
    expect(e.code).toBe('SDH_DBUS');
    expect(e.message).toBe('ReloadUnit app.service: Unit app.service is not active, cannot reload. (org.freedesktop.systemd1.UnitInactive)');
    expect((e as unknown as { dbusName: string }).dbusName).toBe('org.freedesktop.systemd1.UnitInactive');
  });

  it('a job: Subscribe and AddMatch before the call, resolves on its own JobRemoved "done", RemoveMatch after', async () => {
    const { bus, sd } = await setup();
    bus.jobs.set('ReloadUnit app.service', { apply: (u) => (u.type!.MainPID = 101) });
    const r = await sd.reload('app.service');
    expect(r).toMatchObject({ unit: 'app.service', result: 'done', job: '/org/freedesktop/systemd1/job/1' });
    expect(bus.members()).toEqual(['Subscribe', 'AddMatch', 'ReloadUnit', 'RemoveMatch']);
    expect(bus.calls.find((c) => c.member === 'AddMatch')!.body).toEqual([
      "type='signal',sender='org.freedesktop.systemd1',path='/org/freedesktop/systemd1',interface='org.freedesktop.systemd1.Manager',member='JobRemoved'",
    ]);
    expect((await sd.getUnit('app.service')).mainPid).toBe(101);
    expect(bus.signalListeners).toBe(0);
  });

  it('a JobRemoved that arrives before the call returns is not missed', async () => {
    const { bus, sd } = await setup();
    bus.jobs.set('RestartUnit app.service', { when: 'before-reply' });
    await expect(sd.restart('app.service', { timeoutMs: 200 })).resolves.toMatchObject({ result: 'done' });
  });

  it.each(['failed', 'timeout', 'canceled', 'dependency', 'skipped'])('result "%s" is SDH_JOB_FAILED with the result', async (result) => {
    const { bus, sd } = await setup();
    bus.jobs.set('StartUnit app.service', { result });
    const e = await rejection(sd.start('app.service'));
    expect(e.code).toBe('SDH_JOB_FAILED');
    expect(e.message).toBe(`the start job of app.service finished with result "${result}"`);
    expect((e as unknown as { result: string }).result).toBe(result);
  });

  it('a job that never ends: SDH_TIMEOUT after timeoutMs, match removed', async () => {
    const { bus, sd } = await setup();
    bus.jobs.set('StopUnit app.service', { when: 'never' });
    const t = performance.now();
    const e = await rejection(sd.stop('app.service', { timeoutMs: 50 }));
    expect(e.code).toBe('SDH_TIMEOUT');
    expect(e.message).toBe('the stop job of app.service (/org/freedesktop/systemd1/job/1) did not finish within 50 ms');
    expect(performance.now() - t).toBeLessThan(1000);
    expect(bus.members().at(-1)).toBe('RemoveMatch');
  });

  it('a call the bus never answers: SDH_TIMEOUT naming it', async () => {
    const { bus, sd } = await setup(50);
    bus.silent.add('LoadUnit');
    const e = await rejection(sd.getUnit('app.service'));
    expect([e.code, e.message]).toEqual(['SDH_TIMEOUT', 'LoadUnit app.service: no answer within 50 ms']);
  });

  it('a connection that breaks fails the wait under way at once, and later calls', async () => {
    const { bus, sd } = await setup();
    bus.jobs.set('ReloadUnit app.service', { when: 'never' });
    const p = rejection(sd.reload('app.service', { timeoutMs: 60_000 }));
    await new Promise((r) => setTimeout(r, 10));
    bus.breakConnection(new Error('read ECONNRESET'));
    const e = await p;
    expect([e.code, e.message]).toEqual(['SDH_DBUS', 'the D-Bus connection broke: read ECONNRESET']);
    expect((await rejection(sd.getUnit('app.service'))).code).toBe('SDH_DBUS');
  });

  it('watch: PropertiesChanged of the unit only, plain values; the unsubscribe stops it', async () => {
    const { bus, sd } = await setup();
    const seen: unknown[] = [];
    const off = await sd.watch('app.service', (c) => seen.push(c));
    const path = FakeBus.pathOf('app.service');
    const changed = (p: string, v: unknown) =>
      bus.emit({ path: p, interface: 'org.freedesktop.DBus.Properties', member: 'PropertiesChanged', body: ['org.freedesktop.systemd1.Unit', { ActiveState: { signature: 's', value: v } }, []] });
    changed(path, 'reloading');
    changed(FakeBus.pathOf('app.socket'), 'failed');
    await off();
    changed(path, 'active');
    expect(seen).toEqual([{ interface: 'org.freedesktop.systemd1.Unit', changed: { ActiveState: 'reloading' }, invalidated: [] }]);
    expect(bus.members()).toContain('RemoveMatch');
    await off(); // idempotent
  });

  it('listenAddresses: the socket unit\'s Listen pairs', async () => {
    const { sd } = await setup();
    expect(await sd.listenAddresses('app.socket')).toEqual([
      { type: 'Stream', address: '127.0.0.1:8080' },
      { type: 'Datagram', address: '[::1]:53' },
    ]);
  });

  it('close(): idempotent; calls after it fail with SDH_DBUS', async () => {
    const { bus, sd } = await setup();
    sd.close();
    sd.close();
    expect(bus.closed).toBe(true);
    expect((await rejection(sd.getUnit('app.service'))).message).toBe('LoadUnit app.service: the connection is closed');
  });

  it('cannot connect: SDH_DBUS naming the address and the errno', async () => {
    const e = await rejection(Systemd.connect({ address: 'unix:path=/nonexistent/sdh-test-bus', timeoutMs: 2000 }));
    expect(e.code).toBe('SDH_DBUS');
    expect(e.message).toMatch(/^cannot connect to the D-Bus system bus at unix:path=\/nonexistent\/sdh-test-bus: ENOENT/);
    expect((e as unknown as { address: string }).address).toBe('unix:path=/nonexistent/sdh-test-bus');
  });

  it('reads DBUS_SYSTEM_BUS_ADDRESS when no address is given', async () => {
    const e = await rejection(Systemd.connect({ env: { DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/nonexistent/from-env' }, timeoutMs: 2000 }));
    expect(e.message).toContain('unix:path=/nonexistent/from-env');
  });
});

describe('helpers', () => {
  it('plain() unwraps variants and makes 64-bit numbers numbers when they fit', () => {
    expect(plain({ signature: 'a(ss)', value: [['Stream', 'x']] })).toEqual([['Stream', 'x']]);
    expect(plain({ A: { signature: 't', value: 5n } })).toEqual({ A: 5 });
    expect(plain(2n ** 63n)).toBe(2n ** 63n);
  });

  it('unitInterface() maps the suffix to the type interface', () => {
    expect(unitInterface('a.service')).toBe('org.freedesktop.systemd1.Service');
    expect(unitInterface('a-b@x.socket')).toBe('org.freedesktop.systemd1.Socket');
    expect(unitInterface('noext')).toBeUndefined();
  });

  it('busError() without a unit keeps NoSuchUnit as SDH_DBUS', () => {
    const e = busError(Object.assign(new Error('x'), { type: 'org.freedesktop.systemd1.NoSuchUnit', text: 'x' }), 'GetUnit');
    expect(e.code).toBe('SDH_DBUS');
  });
});

describe('dbus-next, an optional peer dependency', () => {
  const notFound = (id: string): never => {
    throw Object.assign(new Error(`Cannot find module '${id}'\nRequire stack:\n- /srv/app/node_modules/sd-handoff/dist/dbus.js`), { code: 'MODULE_NOT_FOUND' });
  };

  it('missing: SDH_MISSING_DEPENDENCY naming the package and the command that installs it', () => {
    let err: SdHandoffError | undefined;
    try {
      loadDbusNext(notFound);
    } catch (e) {
      err = e as SdHandoffError;
    }
    expect(err).toBeInstanceOf(SdHandoffError);
    expect(err?.code).toBe('SDH_MISSING_DEPENDENCY');
    expect(err?.message).toContain('npm install dbus-next');
    expect((err as unknown as { package: string }).package).toBe('dbus-next');
    expect((err?.cause as Error).message).toContain("Cannot find module 'dbus-next'");
  });

  it('a module dbus-next itself fails to find is not mistaken for dbus-next missing', () => {
    const inner = (): never => {
      throw Object.assign(new Error("Cannot find module 'xml2js'\nRequire stack:\n- /srv/app/node_modules/dbus-next/lib/introspect.js"), { code: 'MODULE_NOT_FOUND' });
    };
    expect(() => loadDbusNext(inner)).toThrow("Cannot find module 'xml2js'");
  });

  it('installed (as in this repository): loaded', () => {
    expect(typeof (loadDbusNext() as { sessionBus: unknown }).sessionBus).toBe('function');
  });
});
