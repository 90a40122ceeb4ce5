// The upstream of `bench abuse`, in its own process: the test suite's counting upstream. Sends
// `{ url }` once listening; answers `{ type: 'seen' }` with the requests it received by path.
import { countingUpstream } from '../test/helpers/http-front.js'

const upstream = await countingUpstream()
process.on('message', (msg: { type?: string }) => {
  if (msg.type === 'seen') process.send?.({ type: 'seen', seen: Object.fromEntries(upstream.seen) })
})
process.on('disconnect', () => { void upstream.close().finally(() => process.exit(0)) })
process.send?.({ type: 'ready', url: upstream.url })
