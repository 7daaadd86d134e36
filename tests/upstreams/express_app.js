// A real Express app for the differential path test: which handler does
// Express route a raw path to? Prints "PORT <n>" once listening.
const express = require('express');

const app = express();
const answer = (handler) => (req, res) => {
  res.set('X-Upstream-Handler', handler);
  res.json({ server: 'express', handler, url: req.originalUrl });
};
app.use('/admin', answer('admin'));
app.use('/public', answer('public'));
app.use(answer('root'));

const server = app.listen(0, '127.0.0.1', () => {
  console.log(`PORT ${server.address().port}`);
});
