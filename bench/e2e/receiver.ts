/** Benchmark webhook receiver: reads each body and answers 200. Prints its port on stdout. */
import http from 'node:http'

const server = http.createServer((req, res) => {
  req.on('data', () => {})
  req.on('end', () => {
    res.statusCode = 200
    res.end()
  })
})
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${(server.address() as { port: number }).port}\n`)
})
