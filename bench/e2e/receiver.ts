/**
 * Benchmark webhook receiver: reads each body and answers 200. `GET /count` answers the number of
 * POSTs received so far (a decimal number), so the bench can tell when every delivery has arrived.
 * Prints its port on stdout.
 */
import http from 'node:http'

let posts = 0
const server = http.createServer((req, res) => {
  req.on('data', () => {})
  req.on('end', () => {
    if (req.method === 'POST') posts++
    else if (req.method === 'GET' && req.url === '/count') {
      res.setHeader('content-type', 'text/plain')
      res.end(String(posts))
      return
    }
    res.statusCode = 200
    res.end()
  })
})
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${(server.address() as { port: number }).port}\n`)
})
