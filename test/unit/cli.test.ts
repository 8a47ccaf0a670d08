import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { EXIT, main, type CliIo, type JournalLines } from '../../src/cli.js';
import { Systemd } from '../../src/dbus.js';
import { sdError } from '../../src/errors.js';
import { checkRunOptions, RUN_DEFAULTS, splitCommand } from '../../src/run/options.js';
import { renderUnits, RUN_UNIT_DEFAULTS, type RenderedUnit, type VerifyResult } from '../../src/units.js';
import { FakeBus } from './fake-bus.js';

interface Run {
  code: number;
  out: string;
  err: string;
}

function io(extra: Partial<CliIo> = {}): CliIo & { o: string[]; e: string[] } {
  const o: string[] = [];
  const e: string[] = [];
  return { out: (t) => o.push(t), err: (t) => e.push(t), env: {}, verify: async () => ({ available: true, ok: true, output: '', exitCode: 0 }), ...extra, o, e };
}

async function run(argv: string[], extra: Partial<CliIo> = {}): Promise<Run> {
  const i = io(extra);
  const code = await main(argv, i);
  return { code, out: i.o.join(''), err: i.e.join('') };
}

/** A fake bus with hello.service (pid 100, socket hello.socket, control socket in Environment=). */
function fakeSystemd(setup: (bus: FakeBus) => void = () => {}): { bus: FakeBus; systemd: CliIo['systemd'] } {
  const bus = new FakeBus();
  bus.addUnit('hello.service', { Description: 'hello', TriggeredBy: ['hello.socket'] }, { MainPID: 100, StatusText: 'serving', NFileDescriptorStore: 1, Result: 'success', Environment: [] });
  bus.addUnit('hello.socket', { SubState: 'listening', Triggers: ['hello.service'] }, { Listen: [['Stream', '127.0.0.1:8080']] });
  setup(bus);
  return { bus, systemd: (o) => Systemd.connect({ ...o, bus }) };
}

describe('sd-handoff: usage', () => {
  it('no command: the help, exit 2; --help: exit 0', async () => {
    const none = await run([]);
    expect(none.code).toBe(EXIT.USAGE);
    expect(none.out).toContain('Usage:');
    const help = await run(['--help']);
    expect(help.code).toBe(EXIT.OK);
    expect(help.out).toContain('Exit codes: 0 success, 1 failed (the reason is printed), 2 bad usage, 3 service or system bus not reachable,\n4 no such unit.');
  });

  it.each([['--version'], ['-V']])('%s prints the version in package.json (and only that), exit 0', async (flag) => {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    const r = await run([flag]);
    expect(r).toEqual({ code: EXIT.OK, out: `${pkg.version}\n`, err: '' });
    expect(pkg.version).toMatch(/^\d+\.\d+\.\d+/);
    expect((await run(['--help'])).out).toContain('`sd-handoff --version` prints the version');
  });

  it.each([
    [['upgrade', '--help'], 'Usage: sd-handoff upgrade'],
    [['reload', '--help'], 'Usage: sd-handoff reload UNIT'],
    [['status', '-h'], 'Usage: sd-handoff status UNIT'],
    [['units', '--help'], 'Usage: sd-handoff units render'],
    [['units', 'render', '--help'], 'Usage: sd-handoff units render'],
  ])('%j prints its usage and exit codes, exit 0', async (argv, usage) => {
    const r = await run(argv);
    expect(r.code).toBe(EXIT.OK);
    expect(r.out.startsWith(usage)).toBe(true);
    expect(r.out).toContain('Exit codes:');
    expect(r.err).toBe('');
  });

  it.each([
    [['frobnicate'], 'sd-handoff: unknown command "frobnicate"'],
    [['reload'], 'sd-handoff: reload: name the unit, e.g. `sd-handoff reload my-app.service`'],
    [['reload', 'a', 'b'], 'sd-handoff: reload: one unit at a time, got 2: a b'],
    [['reload', 'a', '--timeout', '0'], 'sd-handoff: --timeout must be a positive number of seconds, got "0"'],
    [['reload', 'a', '--timeout', 'soon'], 'sd-handoff: --timeout must be a positive number of seconds, got "soon"'],
    [['reload', 'a', '--bogus'], "sd-handoff: Unknown option '--bogus'"],
    [['status'], 'sd-handoff: status: name the unit'],
    [['units'], 'Usage: sd-handoff units render'],
    [['units', 'draw'], 'sd-handoff: units: unknown subcommand "draw"; known: render'],
    [['units', 'render', '--exec', '/bin/x', '--listen', '80'], 'sd-handoff: units render: --name is required'],
    [['units', 'render', '--name', 'a', '--listen', '80'], 'sd-handoff: units render: --exec is required'],
    [['units', 'render', '--name', 'a', '--exec', '/bin/x'], 'sd-handoff: units render: --listen is required (one or more addresses)'],
    [['units', 'render', '--name', 'a@b', '--exec', '/bin/x', '--listen', '80'], 'sd-handoff: --name "a@b" is not a unit name'],
    [['units', 'render', '--name', 'a', '--exec', '/bin/x', '--listen', '80', '--type', 'simple'], 'sd-handoff: --type must be notify or notify-reload, got "simple"'],
    [['units', 'render', '--name', 'a', '--exec', '/bin/x', '--listen', '80', '--workers', '0'], 'sd-handoff: --workers must be a whole number >= 1, got "0"'],
    [['units', 'render', '--name', 'a', '--exec', '/bin/x', '--listen', '80', '--watchdog=-1'], 'sd-handoff: --watchdog must be a positive number of seconds, got "-1"'],
    [['units', 'render', '--name', 'a', '--exec', '/bin/x', '--listen', '80', '--user', 'a b'], 'sd-handoff: --user "a b" is not a user/group name or id'],
  ])('%j: exit 2 with the reason', async (argv, message) => {
    const r = await run(argv);
    expect(r.code).toBe(EXIT.USAGE);
    expect(r.err.startsWith(message) || r.out.startsWith(message)).toBe(true);
  });
});

describe('units render: --listen forms', () => {
  const render = (listen: string[], more: string[] = []) =>
    run(['units', 'render', '--name', 'app', '--exec', '/usr/bin/node /srv/app.mjs', ...listen.flatMap((l) => ['--listen', l]), '--dry-run', '--sd-handoff', '/usr/bin/sd-handoff', ...more]);

  it.each([
    ['8080', 'ListenStream=8080'],
    ['127.0.0.1:8080', 'ListenStream=127.0.0.1:8080'],
    ['[::1]:8080', 'ListenStream=[::1]:8080'],
    ['/run/app/app.sock', 'ListenStream=/run/app/app.sock'],
    ['@app-admin', 'ListenStream=@app-admin'],
    ['udp:127.0.0.1:5353', 'ListenDatagram=127.0.0.1:5353'],
    ['udp:[::]:5353', 'ListenDatagram=[::]:5353'],
    ['udp:5353', 'ListenDatagram=5353'],
  ])('%s -> %s', async (arg, line) => {
    const r = await render([arg]);
    expect(r.code, r.err).toBe(EXIT.OK);
    expect(r.out.split('\n')).toContain(line);
  });

  it.each([
    ['localhost:8080', '"localhost" is not an IPv4 address (systemd does not resolve host names; write IPv6 as [ADDR]:PORT)'],
    ['99999', 'port "99999" is not 1-65535'],
    ['127.0.0.1:0', 'port "0" is not 1-65535'],
    ['[nope]:80', '"nope" is not an IPv6 address'],
    ['udp:/run/x.sock', 'udp: takes an IP address or a port'],
    ['http://x', 'not an address'],
    ['8080=bad name', 'fd name "bad name" must be 1-255 of A-Z a-z 0-9 _ . -'],
    ['127.0.0.1:%i', 'port "%i" is not 1-65535'],
  ])('%s: exit 2 naming the value and why', async (arg, why) => {
    const r = await render([arg]);
    expect(r.code).toBe(EXIT.USAGE);
    expect(r.err).toContain(`--listen ${JSON.stringify(arg)}: ${why}`);
    expect(r.out).toBe('');
  });

  it('listeners sharing a name share one socket unit; different names get NAME-FDNAME.socket each, all in Sockets=', async () => {
    const one = await render(['127.0.0.1:80=web', '[::1]:80=web']);
    expect(one.out.match(/^# ==> .* <==$/gm)).toEqual(['# ==> app.service <==', '# ==> app.socket <==']);
    expect(one.out).toContain('ListenStream=127.0.0.1:80\nListenStream=[::1]:80\n');
    expect(one.out).toContain('FileDescriptorName=web\n');
    const two = await render(['80=web', '/run/app-admin.sock=admin']);
    expect(two.out.match(/^# ==> .* <==$/gm)).toEqual(['# ==> app.service <==', '# ==> app-web.socket <==', '# ==> app-admin.socket <==']);
    expect(two.out).toContain('Requires=app-web.socket app-admin.socket\nAfter=app-web.socket app-admin.socket\n');
    expect(two.out).toContain('Sockets=app-web.socket app-admin.socket\n');
    expect(two.out.match(/^Service=app\.service$/gm)).toHaveLength(2);
  });
});

describe('units render: golden output', () => {
  it('hello-http as the integration test renders it', async () => {
    const r = await run([
      'units', 'render', '--name', 'hello-http', '--exec', '/usr/local/bin/node /opt/sd-handoff/examples/hello-http/server.mjs',
      '--listen', '127.0.0.1:8080=http', '--fdstore', '--sd-handoff', '/usr/local/bin/node /opt/sd-handoff/dist/cli.js', '--dry-run',
    ]);
    expect(r.code, r.err).toBe(EXIT.OK);
    await expect(r.out).toMatchFileSnapshot('golden/hello-http.units');
  });

  it('every option: notify-reload, user, group, workers, watchdog, timeouts', async () => {
    const r = await run([
      'units', 'render', '--name', 'api', '--exec', '/usr/bin/node /srv/api/main.mjs', '--listen', '8443=https', '--listen', 'udp:127.0.0.1:8125=stats',
      '--type', 'notify-reload', '--user', 'api', '--group', 'www-data', '--workers', '4', '--watchdog', '15', '--upgrade-timeout', '60', '--stop-timeout', '90',
      '--description', 'The API', '--fdstore', '--sd-handoff', '/usr/bin/sd-handoff', '--dry-run',
    ]);
    expect(r.code, r.err).toBe(EXIT.OK);
    await expect(r.out).toMatchFileSnapshot('golden/api-all-options.units');
    // notify-reload: no ExecReload= (systemd sends SIGHUP itself).
    expect(r.out).not.toMatch(/^ExecReload=/m);
    expect(r.out).toMatch(/^Type=notify-reload$/m);
  });

  it('--template: NAME@.service from instance@.service.in, NAME@.socket, %i allowed', async () => {
    const r = await run(['units', 'render', '--name', 'shard', '--exec', '/usr/bin/node /srv/shard.mjs %i', '--listen', '127.0.0.1:%i=http', '--template', '--sd-handoff', '/usr/bin/sd-handoff', '--dry-run']);
    expect(r.code, r.err).toBe(EXIT.OK);
    await expect(r.out).toMatchFileSnapshot('golden/shard-template.units');
    expect(r.out).toContain('RuntimeDirectory=shard-%i\n');
    expect(r.out).toContain('Requires=shard@%i.socket\n');
    expect(r.out).not.toContain('@comment@');
  });

  it('every directive of the service is one systemd 247 knows (no notify-reload by default)', async () => {
    const r = await run(['units', 'render', '--name', 'app', '--exec', '/bin/app', '--listen', '80', '--fdstore', '--watchdog', '5', '--workers', '2', '--user', 'app', '--dry-run']);
    const keys = [...r.out.matchAll(/^([A-Za-z]+)=/gm)].map((m) => m[1]);
    // Added in: ProtectClock 245, ProtectKernelLogs 244, ProtectHostname 242, RestrictSUIDSGID 242. Nothing newer.
    expect(keys.filter((k) => ['FileDescriptorStorePreserve', 'ProtectProc', 'ProcSubset', 'OpenFile', 'ExtraFileDescriptorNames'].includes(k!))).toEqual([]);
    expect(r.out).toMatch(/^Type=notify$/m);
  });
});

describe('units render --run: any program under sd-handoff run', () => {
  const SDH = '/usr/bin/sd-handoff';
  const render = (more: string[], exec = '/usr/bin/python3 /srv/app/server.py') =>
    run(['units', 'render', '--name', 'pyapp', '--run', `--exec=${exec}`, '--sd-handoff', SDH, '--dry-run', ...more]);
  const service = (out: string) => out.split('# ==> pyapp.socket <==')[0]!;
  const line = (out: string, key: string) => out.split('\n').filter((l) => l.startsWith(`${key}=`));

  it('golden: --ready notify, --watchdog 10 --run-watchdog program; the exact ExecStart= and ExecReload=', async () => {
    const r = await render(['--listen', '127.0.0.1:8097=http', '--ready', 'notify', '--watchdog', '10', '--run-watchdog', 'program']);
    expect(r.code, r.err).toBe(EXIT.OK);
    await expect(r.out).toMatchFileSnapshot('golden/run-python.units');
    expect(line(r.out, 'ExecStart')).toEqual([`ExecStart=${SDH} run --ready notify --watchdog program -- /usr/bin/python3 /srv/app/server.py`]);
    expect(line(r.out, 'ExecReload')).toEqual([`ExecReload=${SDH} upgrade --timeout 90`]);
    expect(line(r.out, 'WatchdogSec')).toEqual(['WatchdogSec=10']);
  });

  it('defaults: --ready port written out, run\'s own watchdog, Type=notify, the control socket, no PIDFile= nor PIDFILE', async () => {
    const r = await render(['--listen', '8097']);
    expect(r.code, r.err).toBe(EXIT.OK);
    const unit = service(r.out);
    expect(line(unit, 'ExecStart')).toEqual([`ExecStart=${SDH} run --ready port -- /usr/bin/python3 /srv/app/server.py`]);
    expect(line(unit, 'ExecReload')).toEqual([`ExecReload=${SDH} upgrade --timeout 90`]);
    expect(line(unit, 'Type')).toEqual(['Type=notify']);
    expect(line(unit, 'Environment')).toEqual(['Environment=SDH_CONTROL_SOCKET=/run/pyapp/control.sock']);
    expect(unit).not.toMatch(/^(PIDFile|FileDescriptorStoreMax)=|PIDFILE|FDSTORE|WORKERS/m);
    expect(line(unit, 'Description')).toEqual(['Description=pyapp (run by sd-handoff run)']);
    expect(line(unit, 'TimeoutStartSec')).toEqual(['TimeoutStartSec=120']);
    // The comments say what this mode does, not what the Upgrader does.
    expect(unit).toContain('MainPID is run\'s and never changes');
    expect(unit).toContain('# --ready port: an instance is ready once it has accept()ed a probe connection');
    expect(unit).not.toMatch(/Upgrader|upg\.listen|MAINPID=<new>|PID file/);
    expect(r.out).toContain('# The name the program finds in LISTEN_FDNAMES');
  });

  it.each([
    ['delay', '# --ready delay: an instance is ready when it is still running 1 s after it started'],
    ['notify', '# --ready notify: an instance is ready when it sends READY=1 to its $NOTIFY_SOCKET'],
  ])('--ready %s: in ExecStart= and explained by its comment only', async (mode, comment) => {
    const r = await render(['--listen', '/run/pyapp.sock', '--ready', mode, '--watchdog', '5']);
    expect(r.code, r.err).toBe(EXIT.OK);
    expect(line(r.out, 'ExecStart')).toEqual([`ExecStart=${SDH} run --ready ${mode} -- /usr/bin/python3 /srv/app/server.py`]);
    expect(r.out).toContain(comment);
    expect(r.out.match(/^# --ready /gm)).toHaveLength(1);
    // --watchdog S without --run-watchdog program: run pings, and the comment says what that does not show.
    expect(r.out).toContain('# sd-handoff run sends it for itself: that shows run is alive, not the program');
  });

  it('--exec is written after `run --` as given: quotes, $VARS and %-specifiers keep their systemd meaning', async () => {
    const exec = '/usr/bin/python3 "/srv/my app/server.py" --name %N --port ${PORT} -- --x \'a b\'';
    const r = await render(['--listen', '8097'], exec);
    expect(r.code, r.err).toBe(EXIT.OK);
    expect(line(r.out, 'ExecStart')).toEqual([`ExecStart=${SDH} run --ready port -- ${exec}`]);
  });

  it('run accepts the options it is given: ExecStart= after `run` parses with run\'s own checks', async () => {
    const r = await render(['--listen', '127.0.0.1:8097=http', '--ready', 'notify', '--watchdog', '10', '--run-watchdog', 'program'], '/usr/bin/python3 /srv/app/server.py --ready port');
    const words = line(r.out, 'ExecStart')[0]!.slice(`ExecStart=${SDH} `.length).split(' ');
    expect(words[0]).toBe('run');
    const { options, command } = splitCommand(words.slice(1));
    const { values } = parseArgs({ args: options, options: { ready: { type: 'string' }, watchdog: { type: 'string' } }, strict: true, allowPositionals: false });
    expect(checkRunOptions(values, command)).toMatchObject({ listen: [], ready: 'notify', watchdog: 'program', command: '/usr/bin/python3', args: ['/srv/app/server.py', '--ready', 'port'] });
  });

  it('--template --run: NAME@.service runs %i-specific programs, no PIDFile=', async () => {
    const r = await run(['units', 'render', '--name', 'shard', '--run', '--exec', '/usr/bin/python3 /srv/shard.py %i', '--listen', '127.0.0.1:%i=http', '--template', '--sd-handoff', SDH, '--dry-run']);
    expect(r.code, r.err).toBe(EXIT.OK);
    expect(r.out.match(/^# ==> .* <==$/gm)).toEqual(['# ==> shard@.service <==', '# ==> shard@.socket <==']);
    expect(line(r.out, 'ExecStart')).toEqual([`ExecStart=${SDH} run --ready port -- /usr/bin/python3 /srv/shard.py %i`]);
    expect(line(r.out, 'Environment')).toEqual(['Environment=SDH_CONTROL_SOCKET=/run/shard-%i/control.sock']);
    expect(r.out).not.toMatch(/^PIDFile=/m);
  });

  it.each([
    [['--listen', '80', '--workers', '2'], '--workers 2 does not apply to --run: sd-handoff run starts one instance of the program'],
    [['--listen', '80', '--fdstore'], "--fdstore does not apply to --run: sd-handoff run keeps no fds in systemd's fd store"],
    [['--listen', '80', '--type', 'notify-reload'], '--type "notify-reload" does not apply to --run: sd-handoff run reloads through ExecReload= (`sd-handoff upgrade`)'],
    [['--listen', '80', '--ready', 'soon'], '--ready must be one of notify, port, delay, got "soon"'],
    [['--listen', '80', '--run-watchdog', 'me'], '--run-watchdog must be self or program, got "me"'],
    [['--listen', '80', '--watchdog', '5', '--run-watchdog', 'program'], '--run-watchdog "program" needs --ready notify: the program\'s WATCHDOG=1 pings reach systemd through the notify socket sd-handoff run gives it (this is --ready port)'],
    [['--listen', '80', '--ready', 'notify', '--run-watchdog', 'program'], '--run-watchdog "program" needs --watchdog S (WatchdogSec=)'],
    [['--listen', '/run/a.sock', '--listen', 'udp:5353=dns'], '--ready "port" (the default) probes a TCP listener and none of --listen /run/a.sock, udp:5353=dns is TCP: use --ready notify or --ready delay'],
    [['--listen', '@admin', '--ready', 'port'], '--ready "port" probes a TCP listener and none of --listen @admin is TCP'],
    [['--listen', '80', '--upgrade-timeout', '60'], '--upgrade-timeout 60 must be more than 60 with --run: sd-handoff run gives a new instance 60 s to be ready'],
  ])('%j is refused: exit 2 naming the option and the value', async (more, message) => {
    const r = await render(more);
    expect(r.code).toBe(EXIT.USAGE);
    expect(r.err.startsWith(`sd-handoff: ${message}`), r.err).toBe(true);
    expect(r.out).toBe('');
  });

  it('an ExecStart= prefix in --exec is refused with --run (systemd would not read it after `run --`)', async () => {
    const r = await render(['--listen', '80'], '-/usr/bin/python3 /srv/app.py');
    expect(r.code).toBe(EXIT.USAGE);
    expect(r.err).toContain('sd-handoff: --exec "-/usr/bin/python3 /srv/app.py" starts with the ExecStart= prefix "-": with --run the command line follows `sd-handoff run --`, where systemd reads no prefix; drop it');
    // Without --run the prefix is systemd's business, as before.
    const plain = await run(['units', 'render', '--name', 'a', '--exec=-/bin/x', '--listen', '80', '--sd-handoff', SDH, '--dry-run']);
    expect(plain.code, plain.err).toBe(EXIT.OK);
  });

  it.each([
    [['--ready', 'notify'], '--ready "notify" is for --run'],
    [['--run-watchdog', 'program'], '--run-watchdog "program" is for --run'],
  ])('%j without --run: exit 2', async (more, message) => {
    const r = await run(['units', 'render', '--name', 'a', '--exec', '/bin/x', '--listen', '80', '--dry-run', ...more]);
    expect(r.code).toBe(EXIT.USAGE);
    expect(r.err.startsWith(`sd-handoff: ${message} (an option of sd-handoff run;`), r.err).toBe(true);
  });

  it('renderUnits: a typed SDH_INVALID_OPTION error carrying the option and the value', () => {
    const base = { name: 'a', exec: '/bin/x', listen: ['80'], run: true };
    expect(() => renderUnits({ ...base, workers: 3 })).toThrow(expect.objectContaining({ code: 'SDH_INVALID_OPTION', option: 'workers', value: 3 }));
    expect(() => renderUnits({ ...base, fdstore: true })).toThrow(expect.objectContaining({ code: 'SDH_INVALID_OPTION', option: 'fdstore', value: true }));
    expect(() => renderUnits({ ...base, type: 'notify-reload' })).toThrow(expect.objectContaining({ code: 'SDH_INVALID_OPTION', option: 'type', value: 'notify-reload' }));
    expect(() => renderUnits({ ...base, upgradeTimeout: 30 })).toThrow(expect.objectContaining({ code: 'SDH_INVALID_OPTION', option: 'upgrade-timeout', value: 30 }));
    expect(() => renderUnits({ ...base, ready: 'soon' as 'port' })).toThrow(expect.objectContaining({ code: 'SDH_INVALID_OPTION', option: 'ready', value: 'soon' }));
  });

  it('the defaults the unit states are run\'s own (--delay, --timeout, --drain)', () => {
    expect(RUN_UNIT_DEFAULTS).toEqual(RUN_DEFAULTS);
  });

  it('--help documents --run, --ready and --run-watchdog', async () => {
    const r = await run(['units', 'render', '--help']);
    expect(r.code).toBe(EXIT.OK);
    expect(r.out).toContain('Usage: sd-handoff units render --name N [--run] --exec CMD --listen ADDR... [options]');
    expect(r.out).toContain('\n  --run                 start --exec under `sd-handoff run`');
    expect(r.out).toContain('\n  --ready MODE          with --run: when a new instance is ready, run\'s --ready (default port):');
    expect(r.out).toContain('\n  --run-watchdog WHO    with --run: who answers WatchdogSec=, run\'s --watchdog');
    expect((await run(['--help'])).out).toContain('with --run, for any program run by `sd-handoff run`.');
  });
});

describe('units render: verify and write', () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });
  const args = (out: string) => ['units', 'render', '--name', 'app', '--exec', '/bin/app', '--listen', '80', '--out', out];

  it('clean verify: writes NAME.service and NAME.socket into --out (created), says so', async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'sdh-cli-'));
    const out = path.join(dir, 'units');
    const seen: RenderedUnit[][] = [];
    const r = await run(args(out), { verify: async (u) => (seen.push(u), { available: true, ok: true, output: '', exitCode: 0 }) });
    expect(r.code).toBe(EXIT.OK);
    expect(r.out).toBe(`wrote ${out}/app.service\nwrote ${out}/app.socket\n`);
    expect(readFileSync(path.join(out, 'app.socket'), 'utf8')).toContain('ListenStream=80\n');
    expect(seen[0]!.map((u) => u.file)).toEqual(['app.service', 'app.socket']);
  });

  it('any warning from systemd-analyze verify: exit 1, the warnings printed, nothing written', async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'sdh-cli-'));
    const verify = async (): Promise<VerifyResult> => ({ available: true, ok: false, output: 'app.service:16: Failed to parse service type, ignoring: notify-reload', exitCode: 0 });
    const r = await run(args(dir), { verify });
    expect(r.code).toBe(EXIT.FAILED);
    expect(r.err).toBe('sd-handoff units render: systemd-analyze verify warned; nothing written (--no-verify writes anyway):\n  app.service:16: Failed to parse service type, ignoring: notify-reload\n');
    expect(existsSync(path.join(dir, 'app.service'))).toBe(false);
    const failed = await run(args(dir), { verify: async () => ({ available: true, ok: false, output: 'bad', exitCode: 1 }) });
    expect(failed.err).toContain('systemd-analyze verify failed (status 1)');
  });

  it('no systemd-analyze: written, with a note that they were not verified; --no-verify skips it', async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'sdh-cli-'));
    const r = await run(args(dir), { verify: async () => ({ available: false, ok: false, output: '', exitCode: null }) });
    expect(r.code).toBe(EXIT.OK);
    expect(r.err).toBe('sd-handoff units render: systemd-analyze not found: the units were not verified\n');
    let called = false;
    const n = await run([...args(dir), '--no-verify'], { verify: async () => ((called = true), { available: true, ok: false, output: 'x', exitCode: 1 }) });
    expect([n.code, called]).toEqual([EXIT.OK, false]);
  });
});

describe('reload (fake bus)', () => {
  const journal = (lines: JournalLines) => async () => lines;
  const clock = (...times: number[]) => {
    let i = 0;
    return () => times[Math.min(i++, times.length - 1)]!;
  };

  it('done and active: "reloaded UNIT: pid OLD -> NEW in N ms", exit 0', async () => {
    const { systemd, bus } = fakeSystemd((b) => b.jobs.set('ReloadUnit hello.service', { apply: (u) => (u.type!.MainPID = 101) }));
    const r = await run(['reload', 'hello'], { systemd, now: clock(1000, 1234) });
    expect(r).toEqual({ code: EXIT.OK, out: 'reloaded hello.service: pid 100 -> 101 in 234 ms\n', err: '' });
    expect(bus.closed).toBe(true);
  });

  it('a service that keeps its pid: "pid unchanged"; --json has the facts', async () => {
    const { systemd } = fakeSystemd();
    expect((await run(['reload', 'hello.service'], { systemd, now: clock(0, 12) })).out).toBe('reloaded hello.service: pid unchanged (100) in 12 ms\n');
    const j = await run(['reload', 'hello.service', '--json'], { systemd, now: clock(0, 12) });
    expect(JSON.parse(j.out)).toEqual({
      ok: true, unit: 'hello.service', oldPid: 100, pid: 100, durationMs: 12, jobResult: 'done', activeState: 'active', subState: 'running',
      result: 'success', reloadResult: '', statusText: 'serving',
    });
  });

  it('job failed: exit 1 with the result, the state, the status text and the journal since the reload began', async () => {
    const { systemd } = fakeSystemd((b) =>
      b.jobs.set('ReloadUnit hello.service', { result: 'failed', apply: (u) => Object.assign(u.type!, { StatusText: 'upgrade failed: the new version (pid 7) exited with status 3 before it was ready', ReloadResult: 'exit-code' }) }),
    );
    let since = 0;
    const r = await run(['reload', 'hello.service'], {
      systemd,
      now: clock(1_700_000_000_500, 1_700_000_000_800),
      journal: async (_u, t) => ((since = t), { lines: ['Reloading hello...', 'hello 7: failing on purpose'] }),
    });
    expect(r.code).toBe(EXIT.FAILED);
    expect(r.out).toBe('');
    expect(since).toBe(1_700_000_000.5);
    expect(r.err).toBe(
      [
        'sd-handoff reload: reload of hello.service failed: the reload job finished with result "failed"',
        '  state:   active (running), result success, reload result exit-code',
        '  main pid: 100 (unchanged)',
        '  status:  upgrade failed: the new version (pid 7) exited with status 3 before it was ready',
        '  journal since the reload started (2 lines):',
        '    Reloading hello...',
        '    hello 7: failing on purpose',
        '',
      ].join('\n'),
    );
  });

  it('job done but the unit is not active after it: exit 1; a missing journalctl is said', async () => {
    const { systemd } = fakeSystemd((b) =>
      b.jobs.set('ReloadUnit hello.service', { apply: (u) => (Object.assign(u.unit, { ActiveState: 'failed', SubState: 'failed' }), Object.assign(u.type!, { MainPID: 0, Result: 'exit-code' })) }),
    );
    const r = await run(['reload', 'hello.service', '--json'], { systemd, journal: journal({ lines: [], unavailable: 'journalctl not found: no journal lines' }) });
    expect(r.code).toBe(EXIT.FAILED);
    expect(r.err).toContain('reload of hello.service failed: the unit is failed (failed) after the reload\n  state:   failed (failed), result exit-code\n  main pid: 100 -> 0\n');
    expect(r.err).toContain('  journal: journalctl not found: no journal lines\n');
    expect(JSON.parse(r.out)).toMatchObject({ ok: false, error: 'the unit is failed (failed) after the reload', journal: [], journalUnavailable: 'journalctl not found: no journal lines' });
  });

  it('a job still running at --timeout: exit 1, says so', async () => {
    const { systemd } = fakeSystemd((b) => b.jobs.set('ReloadUnit hello.service', { when: 'never' }));
    const r = await run(['reload', 'hello.service', '--timeout', '0.05'], { systemd, journal: journal({ lines: [] }) });
    expect(r.code).toBe(EXIT.FAILED);
    expect(r.err).toContain('failed: the reload job did not finish within 50 ms');
  });

  it('no such unit: exit 4; systemd refusing the job: exit 1 with its words; no bus: exit 3', async () => {
    const { systemd } = fakeSystemd((b) => b.errors.set('ReloadUnit', ['org.freedesktop.systemd1.JobTypeNotApplicable', 'Job type reload is not applicable for unit hello.service.']));
    expect(await run(['reload', 'nope.service'], { systemd })).toEqual({ code: EXIT.NO_SUCH_UNIT, out: '', err: 'sd-handoff reload: no such unit: nope.service\n' });
    expect((await run(['reload', 'hello.service'], { systemd })).err).toBe(
      'sd-handoff reload: ReloadUnit hello.service: Job type reload is not applicable for unit hello.service. (org.freedesktop.systemd1.JobTypeNotApplicable)\n',
    );
    const down = async () => {
      throw sdError('SDH_DBUS', 'cannot connect to the D-Bus system bus at unix:path=/x: ENOENT', { address: 'unix:path=/x' });
    };
    const r = await run(['reload', 'hello.service', '--json'], { systemd: down });
    expect(r.code).toBe(EXIT.UNREACHABLE);
    expect(JSON.parse(r.out)).toEqual({ ok: false, code: 'SDH_DBUS', error: 'cannot connect to the D-Bus system bus at unix:path=/x: ENOENT', dbusName: null });
  });

  it('--bus is the address connected to', async () => {
    let address: string | undefined;
    const { systemd } = fakeSystemd();
    await run(['reload', 'hello.service', '--bus', 'unix:path=/run/other'], { systemd: (o) => ((address = o.address), systemd!(o)) });
    expect(address).toBe('unix:path=/run/other');
  });
});

describe('status (fake bus)', () => {
  it('state, pid, status, fd store, the socket units with their addresses; no control socket', async () => {
    const { systemd } = fakeSystemd();
    const r = await run(['status', 'hello'], { systemd });
    expect(r).toEqual({
      code: EXIT.OK,
      err: '',
      out: [
        'hello.service - hello',
        '  state:        active (running)',
        '  main pid:     100',
        '  status:       serving',
        '  fd store:     1',
        '  sockets:',
        '    hello.socket active (listening): 127.0.0.1:8080 (Stream)',
        '  last upgrade: no control socket (the unit sets no SDH_CONTROL_SOCKET in Environment=)',
        '',
      ].join('\n'),
    });
  });

  it('a control socket that cannot be reached is said; the status text tells an upgrade that happened', async () => {
    const { systemd } = fakeSystemd((b) => Object.assign(b.units.get('hello.service')!.type!, { Environment: ['SDH_CONTROL_SOCKET=/nonexistent/sdh.sock'], StatusText: 'upgraded: pid 100 took over from 99 in 80 ms' }));
    const r = await run(['status', 'hello', '--json'], { systemd });
    const j = JSON.parse(r.out) as Record<string, unknown>;
    expect(j.controlSocket).toBe('/nonexistent/sdh.sock');
    expect((j.control as { error: string }).error).toMatch(/^cannot reach the control socket: connect \/nonexistent\/sdh\.sock: ENOENT/);
    expect(j.lastUpgrade).toMatchObject({ ok: true, source: 'status-text' });
    expect((j.lastUpgrade as { text: string }).text).toMatch(/^upgraded: pid 100 took over from 99 in 80 ms \(status text; control socket: cannot reach/);
  });

  it('no such unit: exit 4', async () => {
    const { systemd } = fakeSystemd();
    expect(await run(['status', 'nope.service'], { systemd })).toEqual({ code: EXIT.NO_SUCH_UNIT, out: '', err: 'sd-handoff status: no such unit: nope.service\n' });
  });
});
