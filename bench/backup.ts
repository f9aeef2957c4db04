// Backups through Cellar against bare pgBackRest on the same data, and the RPO of a Starter.
//   size:     a Starter add-on loaded with --mb of rows through its URL (TLS, gateway)
//   backup:   Cellar's full backup (taken by the agent when a restore starts a new timeline:
//             restore done -> listed by the API) vs `pgbackrest backup --type=full` of a bare
//             copy of the same data into a repository with Cellar's options
//   restore:  Cellar's PITR restore in place (POST /pitr/restore -> operation done) and a fork
//             (POST addon with restore_from -> running) vs `pgbackrest restore --type=time`
//             into an empty dir + pg_ctl start + promoted, to the same target from the same set
//   verify:   how long the verification of that full backup takes (listed -> verified)
//   RPO:      a Starter written every 100 ms; its agent and postmaster killed -9 and its data
//             dir considered lost; the repository restored to its end: the last acknowledged
//             write against the newest restored one (and Cellar's claimed latest point)
//   Each of --rounds restores a new target (after the previous round's restore and its backup);
//   the restore's steps are broken down from the controller's and the agent's timestamps.
// Usage: npx tsx bench/backup.ts [--mb=1024] [--plan=postgresql-starter-4096] [--rounds=1]
//        [--rpo-rounds=3] [--skip-size] [--skip-fork]
import os from "node:os";
import path from "node:path";
import fs from "node:fs/promises";
import { startBenchCellar, type BenchCellar } from "./support/cellar.ts";
import { BareRepo, BareServer } from "./support/backup-bare.ts";
import { CellarBackups, loadRows } from "./support/backup-cellar.ts";
import { measureRpo, type RpoRound } from "./support/backup-rpo.ts";
import {
  cleanupOnSignal,
  intFlag,
  machineFacts,
  mean,
  parseFlags,
  percentile,
  sampleLoad,
} from "./support/stats.ts";

const flags = parseFlags(process.argv.slice(2));
const MB = intFlag(flags, "mb", 1024);
const PLAN = flags.get("plan") ?? "postgresql-starter-4096";
const RPO_ROUNDS = intFlag(flags, "rpo-rounds", 3, 0);
const ROUNDS = intFlag(flags, "rounds", 1, 1);
const SUBNET = 96;
const HOST = "bench-bk-s1";

const s = (msValue: number) => `${(msValue / 1000).toFixed(1)} s`;
const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}x`;
const median = (values: number[]) => percentile(values, 50);

async function sizeBench(c: BenchCellar, cb: CellarBackups): Promise<string[]> {
  const lines: string[] = [];
  const src = await cb.addon("bk-bench", PLAN);
  const loaded = await loadRows(src.url, c.regionCa, MB);
  lines.push(
    `data: ${loaded.rows} rows, database ${(loaded.bytes / 1024 ** 2).toFixed(0)} MiB, loaded in ${s(loaded.ms)}`,
  );
  // The first full backup predates the data: a restore to after the load starts a new timeline,
  // whose full backup (taken by the agent at once) holds the data. Timed, for information.
  // (A target after the first backup: with little data, that backup may end after the load.)
  await cb.waitWindow(src);
  const tLoad = await cb.serverNow(src);
  await cb.waitArchivedPast(src, tLoad);
  const setup = await cb.restore(src, tLoad);
  lines.push(`setup restore replaying the load's WAL from the empty first backup: ${s(setup.ms)}`);
  const backup = await cb.nextFullBackup(src, setup.doneAt);
  lines.push(
    `Cellar full backup: restore done -> listed by the API ${s(backup.listedMs)} (pgBackRest's own start->stop ${s(backup.pgbackrestMs)}), ${(backup.size / 1024 ** 2).toFixed(0)} MiB`,
  );
  let bareBackup = NaN;
  const verified = await cb.waitVerified(src, backup.label);
  lines.push(`verification of that backup: listed -> verified ${s(verified.ms)} (${verified.detail})`);

  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-bench-bare-"));
  await fs.chmod(dir, 0o755);
  const bare = new BareServer(path.join(dir, "server"), 59_432);
  const ratios: number[] = [];
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      // Each round's target is after the newest full backup (the previous round's restore
      // started a new timeline, whose backup the agent took at once).
      const { target: t2, after } = await cb.markTarget(src);
      await cb.waitArchivedPast(src, after);
      let t0 = performance.now();
      const steps = await bare.restoreAndPromote(cb.configFileOfDir(await cb.nodeDirOf(src)), src.id, t2);
      const bareRestoreMs = performance.now() - t0;
      const marker = await bare.query<{ n: number }>("SELECT count(*)::int AS n FROM marks", src.dbname);
      lines.push(
        `round ${round}: bare restore to T (pgbackrest restore + pg_ctl start + promoted): ${s(bareRestoreMs)} (${s(steps.restoreMs)} + ${s(steps.startMs)} + ${s(steps.promoteMs)}); rows at T ${marker[0]?.n}`,
      );
      if (round === 1) {
        const repo = new BareRepo(path.join(dir, "repo"), bare);
        await repo.ensure();
        t0 = performance.now();
        await repo.backupFull();
        const bareBackupMs = performance.now() - t0;
        lines.push(
          `bare full backup (pgbackrest backup --type=full, Cellar's options): ${s(bareBackupMs)}`,
          `Cellar full backup: first ${s(backup.listedMs)} = ${ratio(backup.listedMs, bareBackupMs)} bare`,
        );
        bareBackup = bareBackupMs;
      }
      await bare.destroy();
      if (round === 1 && !flags.has("skip-fork")) {
        const fork = await cb.fork(src, t2, PLAN);
        const forkRows = await cb.countMarks(fork.addon);
        await cb.remove(fork.addon);
        lines.push(
          `Cellar fork at T (POST -> running): ${s(fork.ms)} = ${ratio(fork.ms, bareRestoreMs)} bare; rows ${forkRows}`,
        );
      }
      const inPlace = await cb.restore(src, t2);
      const rowsAfter = await cb.countMarks(src);
      ratios.push(inPlace.ms / bareRestoreMs);
      lines.push(
        `round ${round}: Cellar PITR restore in place to T (POST -> operation done): ${s(inPlace.ms)} = ${ratio(inPlace.ms, bareRestoreMs)} bare; rows ${rowsAfter}`,
        ...(await cb.restoreBreakdown(src, inPlace)),
      );
      const next = await cb.nextFullBackup(src, inPlace.doneAt);
      lines.push(
        `round ${round}: Cellar full backup after the restore ${s(next.listedMs)} = ${ratio(next.listedMs, bareBackup)} bare (pgBackRest start->stop ${s(next.pgbackrestMs)})`,
      );
      // Its verification reads the whole database: not while the next round is timed.
      if (round < ROUNDS) await cb.waitVerified(src, next.label);
    }
  } finally {
    await bare.destroy();
    await fs.rm(dir, { recursive: true, force: true });
  }
  if (ROUNDS > 1) {
    lines.push(
      `restore in place / bare: ${ratios.map((r) => r.toFixed(2)).join(", ")}; median ${median(ratios).toFixed(2)}x`,
    );
  }
  return lines;
}

function rpoSummary(rounds: RpoRound[]): string[] {
  const lines = rounds.map(
    (r, i) =>
      `RPO round ${i + 1}: killed ${s(r.killAfterMs)} in; last ack ${r.lastAckId}, newest restored ${r.restoredId}: data-loss window ${s(r.lossMs)}; Cellar claimed ${s(r.claimAgeMs)} before the kill (claim <= restorable: ${r.claimSafe})`,
  );
  if (rounds.length) {
    const loss = rounds.map((r) => r.lossMs);
    lines.push(
      `RPO: max ${s(Math.max(...loss))}, mean ${s(mean(loss))} (target <= 60 s; archive_timeout 30 s)`,
    );
  }
  return lines;
}

async function main(): Promise<void> {
  const load = sampleLoad();
  const started = new Date();
  const c = await startBenchCellar({
    subnet: SUBNET,
    hosts: [{ name: HOST, pool: "shared", vcpu: 2, ramMb: 16_384, diskGb: 200 }],
    env: { CELLAR_BACKUP_CHECK_EVERY_S: "5" },
  });
  const stopSignal = cleanupOnSignal(() => c.close());
  const lines: string[] = [];
  try {
    const cb = new CellarBackups(c, HOST);
    if (!flags.has("skip-size")) lines.push(...(await sizeBench(c, cb)));
    const rounds: RpoRound[] = [];
    const rpoAddon = RPO_ROUNDS > 0 ? await cb.addon("rpo-bench", "postgresql-starter-512") : null;
    for (let i = 0; i < RPO_ROUNDS; i++) rounds.push(await measureRpo(c, cb, HOST, rpoAddon!, i));
    lines.push(...rpoSummary(rounds));
  } finally {
    stopSignal();
    await c.close();
  }
  const l = load.stop();
  console.log(`\nbackup benchmark, ${started.toISOString()}, ${machineFacts()}`);
  console.log(
    `plan ${PLAN}, ${MB} MiB of rows; load average min ${l.min.toFixed(1)} mean ${l.mean.toFixed(1)} max ${l.max.toFixed(1)}`,
  );
  for (const line of lines) console.log(`  ${line}`);
}

await main();
