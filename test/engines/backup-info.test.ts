// The pure side of the pgBackRest module: reading `info --output=json`, choosing the backup
// a restore starts from, when a full backup is due, the window, and how far the archive reaches.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { archiveStatusOf, type ArchiverRow } from "../../src/engines/postgresql/backup/archive-status.ts";
import {
  chooseBackupSet,
  fullBackupDue,
  parseLsn,
  parseStanzaInfo,
  recoveryWindow,
  segmentEndLsn,
} from "../../src/engines/postgresql/backup/backup-info.ts";
import {
  archiveSettings,
  renderPgBackRestConf,
  restoreCommand,
  shellWord,
} from "../../src/engines/postgresql/backup/pgbackrest-config.ts";

const T0 = 1_800_000_000; // seconds
const set = (label: string, tl: number, start: number, stop: number, extra: object = {}) => ({
  label,
  type: "full",
  error: false,
  archive: { start: `0000000${tl}000000000000000${tl + 1}`, stop: `0000000${tl}000000000000000${tl + 2}` },
  timestamp: { start: T0 + start, stop: T0 + stop },
  info: { size: 100, repository: { size: 10 } },
  annotation: { "cellar-reason": "initial" },
  ...extra,
});
const infoJson = (backups: object[]) =>
  JSON.stringify([{ name: "ad-x", status: { code: 0, message: "ok" }, backup: backups }]);
const at = (s: number) => new Date((T0 + s) * 1000);

describe("pgBackRest info and decisions", () => {
  it("reads the stanza's backups (sorted by end), skipping errored sets and other stanzas", () => {
    const info = parseStanzaInfo(
      infoJson([set("B", 2, 100, 110), set("A", 1, 0, 10), set("E", 1, 50, 60, { error: true })]),
      "ad-x",
    );
    assert.equal(info.statusCode, 0);
    assert.deepEqual(
      info.backups.map((b) => [b.label, b.timeline, b.stoppedAt.getTime()]),
      [
        ["A", 1, at(10).getTime()],
        ["B", 2, at(110).getTime()],
      ],
    );
    assert.equal(info.backups[0]!.annotations["cellar-reason"], "initial");
    assert.equal(parseStanzaInfo(infoJson([]), "ad-other").statusCode, -1);
  });

  it("restores from the newest backup of the current timeline that ended by the target", () => {
    const { backups } = parseStanzaInfo(
      infoJson([set("A", 1, 0, 10), set("B", 1, 100, 110), set("C", 2, 200, 210)]),
      "ad-x",
    );
    assert.equal(chooseBackupSet(backups, 1, at(150))?.label, "B");
    assert.equal(chooseBackupSet(backups, 1, at(110))?.label, "B");
    assert.equal(chooseBackupSet(backups, 1, at(50))?.label, "A");
    assert.equal(chooseBackupSet(backups, 1, at(5)), null);
    assert.equal(chooseBackupSet(backups, 2, at(150)), null, "never from an older timeline");
  });

  it("takes a full backup first, on a new timeline, and once the newest is too old", () => {
    const { backups } = parseStanzaInfo(infoJson([set("A", 1, 0, 10)]), "ad-x");
    assert.equal(fullBackupDue([], 1, at(0), 168), "initial");
    assert.equal(fullBackupDue(backups, 2, at(20), 168), "new-timeline");
    assert.equal(fullBackupDue(backups, 1, at(3600), 168), null);
    assert.equal(fullBackupDue(backups, 1, at(168 * 3600), 168), "scheduled");
  });

  it("spans the window from the oldest backup of the timeline to the archive's reach", () => {
    const b = [
      { timeline: 1, stoppedAt: at(10) },
      { timeline: 2, stoppedAt: at(200) },
      { timeline: 2, stoppedAt: at(300) },
    ];
    assert.deepEqual(recoveryWindow(b, 2, at(400)), { earliest: at(200), latest: at(400) });
    assert.deepEqual(recoveryWindow(b, 2, at(250)), { earliest: at(200), latest: at(300) });
    assert.deepEqual(recoveryWindow(b, 2, null), { earliest: at(200), latest: at(300) });
    assert.deepEqual(recoveryWindow(b, 3, at(400)), { earliest: null, latest: null });
  });

  it("knows where a segment ends", () => {
    assert.equal(parseLsn("0/5000028"), 0x5000028n);
    assert.equal(parseLsn("1/0"), 1n << 32n);
    assert.equal(segmentEndLsn("000000010000000000000004", 16 * 1024 * 1024), 0x5000000n);
    assert.equal(segmentEndLsn("0000000200000001000000FF", 16 * 1024 * 1024), 2n << 32n);
    assert.equal(segmentEndLsn("00000002.history", 16 * 1024 * 1024), null);
  });
});

describe("how far the archive reaches", () => {
  const now = new Date("2026-01-01T12:00:00Z");
  const archived = new Date("2026-01-01T11:59:00Z");
  const row = (over: Partial<ArchiverRow>): ArchiverRow => ({
    last_archived_wal: "000000010000000000000004",
    last_archived_time: archived,
    last_failed_wal: null,
    last_failed_time: null,
    insert_lsn: "0/5000028",
    current_wal: "000000010000000000000004",
    segment_bytes: "16MB",
    now,
    ...over,
  });

  it("reaches now when nothing was written since the last archived segment", () => {
    assert.deepEqual(archiveStatusOf(row({})), { timeline: 1, archivedUntil: now, error: null });
  });

  it("reaches the last archiving when WAL waits to be archived, or the timeline changed", () => {
    assert.equal(archiveStatusOf(row({ insert_lsn: "0/5001000" })).archivedUntil, archived);
    const tl2 = row({ current_wal: "000000020000000000000005", insert_lsn: "0/5000028" });
    assert.equal(archiveStatusOf(tl2).timeline, 2);
    assert.equal(archiveStatusOf(tl2).archivedUntil, archived);
    assert.equal(archiveStatusOf(row({ last_archived_wal: "00000002.history" })).archivedUntil, archived);
  });

  it("reaches only the segment's completion when WAL waits: the push itself takes time", () => {
    const completed = new Date("2026-01-01T11:58:58.500Z");
    const busy = row({ insert_lsn: "0/5001000" });
    assert.equal(archiveStatusOf(busy, completed).archivedUntil, completed);
    // Never later than the archiver's own time, and caught up still reaches now.
    assert.equal(archiveStatusOf(busy, new Date("2026-01-01T11:59:30Z")).archivedUntil, archived);
    assert.equal(archiveStatusOf(row({}), completed).archivedUntil, now);
  });

  it("says when archiving fails, and has no reach before a first archive", () => {
    const failing = archiveStatusOf(
      row({
        last_failed_wal: "000000010000000000000005",
        last_failed_time: new Date("2026-01-01T11:59:30Z"),
      }),
    );
    assert.equal(failing.archivedUntil, archived);
    assert.match(failing.error ?? "", /archiving of WAL 000000010000000000000005 fails since/);
    assert.equal(
      archiveStatusOf(row({ last_archived_wal: null, last_archived_time: null })).archivedUntil,
      null,
    );
  });
});

describe("pgBackRest configuration", () => {
  const spec = {
    stanza: "ad-1",
    repoPath: "/srv/cellar/backups/osc-fr1/ad-1",
    cipherPass: "p".repeat(64),
    retentionDays: 14,
    fullEveryHours: 168,
    archiveTimeoutS: 30,
    checkEveryS: 60,
  };
  const paths = {
    configFile: "/s/i/backup/pgbackrest.conf",
    lockDir: "/s/i/backup/lock",
    logDir: "/s/i/backup/log",
  };
  const node = { dataDir: "/s/i/node/pgdata", port: 20001, socketDir: "/run/cellar/x/y" };

  it("renders the database's repository, key, retention and the node", () => {
    const conf = renderPgBackRestConf(spec, node, paths);
    for (const line of [
      "repo1-path=/srv/cellar/backups/osc-fr1/ad-1",
      "repo1-cipher-type=aes-256-cbc",
      `repo1-cipher-pass=${"p".repeat(64)}`,
      "repo1-retention-full-type=time",
      "repo1-retention-full=14",
      "[ad-1]",
      "pg1-path=/s/i/node/pgdata",
      "pg1-port=20001",
      "pg1-socket-path=/run/cellar/x/y",
    ]) {
      assert.ok(conf.split("\n").includes(line), line);
    }
    assert.throws(() => renderPgBackRestConf({ ...spec, repoPath: "/a\nrepo1-path=/b" }, node, paths));
  });

  it("archives and restores through the node's own config, quoted for the shell", () => {
    assert.deepEqual(archiveSettings(spec, paths), {
      command: "pgbackrest --config=/s/i/backup/pgbackrest.conf --stanza=ad-1 archive-push %p",
      timeoutS: 30,
    });
    assert.equal(
      restoreCommand("/s/i/backup/pgbackrest.conf", "ad-1"),
      'pgbackrest --config=/s/i/backup/pgbackrest.conf --stanza=ad-1 archive-get %f "%p"',
    );
    assert.equal(shellWord("--config=/a b/it's"), `'--config=/a b/it'\\''s'`);
  });
});
