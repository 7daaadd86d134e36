// A real WebSocket upstream (the `ws` package) for tests/websocket_revocation.rs:
// echoes every message back. Listens on 127.0.0.1 at the port in argv[2].
const { WebSocketServer } = require('ws');

const server = new WebSocketServer({ host: '127.0.0.1', port: Number(process.argv[2]) });
server.on('connection', (socket) => {
  socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }));
});
