/**
 * A fake systemd on a fake D-Bus, for src/dbus.ts and the CLI: units with properties, LoadUnit/Get/GetAll,
 * Subscribe/AddMatch/RemoveMatch, jobs whose JobRemoved result and timing the test chooses. Every call is
 * recorded in order.
 */
import type { Bus, BusCall, BusSignal } from '../../src/dbus.js';

export interface FakeUnit {
  unit: Record<string, unknown>;
  /** The type interface's properties (Service, Socket...). */
  type?: Record<string, unknown>;
}

export interface FakeJobPlan {
  /** JobRemoved result (default 'done'). */
  result?: string;
  /** 'before-reply': JobRemoved is delivered before the method returns; 'after' (default); 'never'. */
  when?: 'before-reply' | 'after' | 'never';
  /** Applied to the unit when the job ends (new MainPID...). */
  apply?: (u: FakeUnit) => void;
}

const variant = (value: unknown) => ({ signature: typeof value === 'string' ? 's' : 'v', value });

export class FakeBus implements Bus {
  readonly calls: BusCall[] = [];
  readonly units = new Map<string, FakeUnit>();
  readonly jobs = new Map<string, FakeJobPlan>();
  /** D-Bus errors to answer a member with: `{ ReloadUnit: ['org.freedesktop.systemd1.UnitInactive', 'not active'] }`. */
  readonly errors = new Map<string, [string, string]>();
  /** Members that never answer. */
  readonly silent = new Set<string>();
  closed = false;
  #signals = new Set<(s: BusSignal) => void>();
  #errors = new Set<(e: Error) => void>();
  #jobId = 0;

  addUnit(name: string, unit: Record<string, unknown>, type: Record<string, unknown> = {}): FakeUnit {
    const u: FakeUnit = { unit: { Id: name, LoadState: 'loaded', ActiveState: 'active', SubState: 'running', Description: name, TriggeredBy: [], Triggers: [], ...unit }, type };
    this.units.set(name, u);
    return u;
  }

  static pathOf(name: string): string {
    return `/org/freedesktop/systemd1/unit/${name.replace(/[^A-Za-z0-9]/g, (c) => `_${c.charCodeAt(0).toString(16).padStart(2, '0')}`)}`;
  }

  #byPath(path: string): FakeUnit | undefined {
    for (const [name, u] of this.units) if (FakeBus.pathOf(name) === path) return u;
    return undefined;
  }

  emit(signal: BusSignal): void {
    for (const l of [...this.#signals]) l(signal);
  }

  breakConnection(err: Error): void {
    for (const l of [...this.#errors]) l(err);
  }

  async call(msg: BusCall): Promise<unknown[]> {
    this.calls.push(msg);
    await Promise.resolve();
    if (this.silent.has(msg.member)) return new Promise(() => {});
    const e = this.errors.get(msg.member);
    if (e) throw Object.assign(new Error(e[1]), { type: e[0], text: e[1] });
    const [a, b] = (msg.body ?? []) as [string, string];
    switch (msg.member) {
      case 'Subscribe':
      case 'AddMatch':
      case 'RemoveMatch':
        return [];
      case 'LoadUnit':
        if (!this.units.has(a)) this.addUnit(a, { LoadState: 'not-found', ActiveState: 'inactive', SubState: 'dead' });
        return [FakeBus.pathOf(a)];
      case 'Get':
      case 'GetAll': {
        const u = this.#byPath(msg.path);
        if (!u) throw Object.assign(new Error('Unknown object'), { type: 'org.freedesktop.DBus.Error.UnknownObject', text: `Unknown object '${msg.path}'.` });
        const props = a === 'org.freedesktop.systemd1.Unit' ? u.unit : (u.type ?? {});
        if (msg.member === 'GetAll') return [Object.fromEntries(Object.entries(props).map(([k, v]) => [k, variant(v)]))];
        if (!(b in props)) throw Object.assign(new Error('Unknown property'), { type: 'org.freedesktop.DBus.Error.UnknownProperty', text: `Unknown property ${b}` });
        return [variant(props[b])];
      }
      case 'StartUnit':
      case 'StopUnit':
      case 'RestartUnit':
      case 'ReloadUnit': {
        const u = this.units.get(a);
        if (!u || u.unit.LoadState === 'not-found') {
          throw Object.assign(new Error('not found'), { type: 'org.freedesktop.systemd1.NoSuchUnit', text: `Unit ${a} not found.` });
        }
        const id = ++this.#jobId;
        const job = `/org/freedesktop/systemd1/job/${id}`;
        const plan = this.jobs.get(`${msg.member} ${a}`) ?? {};
        const removed = () => {
          plan.apply?.(u);
          // Another job's end first: it must not be taken for ours.
          this.emit({ path: '/org/freedesktop/systemd1', interface: 'org.freedesktop.systemd1.Manager', member: 'JobRemoved', body: [id + 1000, `${job}0`, 'other.service', 'failed'] });
          this.emit({ path: '/org/freedesktop/systemd1', interface: 'org.freedesktop.systemd1.Manager', member: 'JobRemoved', body: [id, job, a, plan.result ?? 'done'] });
        };
        if (plan.when === 'before-reply') removed();
        else if (plan.when !== 'never') setTimeout(removed, 5);
        return [job];
      }
      default:
        throw Object.assign(new Error('unknown method'), { type: 'org.freedesktop.DBus.Error.UnknownMethod', text: `no ${msg.member}` });
    }
  }

  onSignal(listener: (s: BusSignal) => void): () => void {
    this.#signals.add(listener);
    return () => void this.#signals.delete(listener);
  }

  onError(listener: (e: Error) => void): () => void {
    this.#errors.add(listener);
    return () => void this.#errors.delete(listener);
  }

  close(): void {
    this.closed = true;
  }

  members(): string[] {
    return this.calls.map((c) => c.member);
  }

  get signalListeners(): number {
    return this.#signals.size;
  }
}
