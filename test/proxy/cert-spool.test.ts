// The spool of checked certificate bytes: records read back as written, across the write buffer,
// page boundaries and the file; in memory when no temporary file can be made (a read-only root
// filesystem), with a reason; compaction keeps only the records asked for.
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { CertSpool, type SpoolRef } from '../../src/tls/cert-spool.js'

function roundTrip (t: Test, spool: CertSpool): void {
  const records = [10, 700, 1 << 20, 3, (1 << 20) + 17, 0, 5000].map(n => randomBytes(n))
  const refs: SpoolRef[] = records.map(r => spool.append(r))
  records.forEach((r, i) => { t.ok(spool.read(refs[i] ?? { offset: 0, length: 0 }).equals(r), `record ${i} (${r.length} bytes) before a flush`) })
  spool.flush()
  records.forEach((r, i) => { t.ok(spool.read(refs[i] ?? { offset: 0, length: 0 }).equals(r), `record ${i} after a flush`) })
  const { spool: compact, refs: moved } = spool.compact([refs[4], refs[1]].filter((r): r is SpoolRef => r !== undefined))
  t.ok(compact.read(moved[0] ?? { offset: 0, length: 0 }).equals(records[4] ?? Buffer.alloc(1)), 'compacted: the first record kept')
  t.ok(compact.read(moved[1] ?? { offset: 0, length: 0 }).equals(records[1] ?? Buffer.alloc(1)), 'compacted: the second record kept')
  t.equal(compact.size, (records[4]?.length ?? 0) + (records[1]?.length ?? 0), 'nothing else')
  compact.close()
}

t.test('in an unlinked temporary file', async t => {
  const reasons: string[] = []
  roundTrip(t, new CertSpool({ onFallback: r => reasons.push(r) }))
  t.same(reasons, [], 'no fallback')
})

t.test('in memory when no temporary file can be made, saying why', async t => {
  const reasons: string[] = []
  roundTrip(t, new CertSpool({ dir: join('/nonexistent', String(process.pid)), onFallback: r => reasons.push(r) }))
  t.match(reasons, [/cannot create a temporary file \(ENOENT\)/])
})
