/**
 * CPU priority of a whole process. On Linux `setpriority(PRIO_PROCESS, pid)` (Node's `os.setPriority`) changes ONE
 * thread, the one whose id is `pid`: a Node process started at nice +10 that raised only its main thread back kept
 * V8's platform threads (GC, compilation) and libuv's thread pool (fs, dns, crypto, zlib, the addon's socket calls)
 * at +10 for good (measured: `0,10,10,10,...` in /proc/PID/task/∗/stat). Threads created later inherit the nice value
 * of the thread that creates them, so every existing thread is set.
 */
import { readdirSync } from 'node:fs';
import { setPriority } from 'node:os';

/**
 * Sets the nice value of every thread of `pid` (0: this process). Throws when the main thread cannot be set (gone,
 * or not allowed); threads that end meanwhile are skipped.
 */
export function setProcessNice(pid: number, nice: number): void {
  const proc = pid === 0 ? 'self' : String(pid);
  let tids: number[];
  try {
    tids = readdirSync(`/proc/${proc}/task`).map(Number);
  } catch {
    tids = [];
  }
  const main = pid === 0 ? process.pid : pid;
  setPriority(main, nice);
  for (const tid of tids) {
    if (tid === main) continue;
    try {
      setPriority(tid, nice);
    } catch {
      /* the thread ended */
    }
  }
}
