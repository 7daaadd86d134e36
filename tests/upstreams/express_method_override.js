// A real Express 5 app with the `method-override` middleware, as the npm
// README sets it up: the method comes from X-HTTP-Method-Override,
// X-HTTP-Method, X-Method-Override or `?_method=` on a POST. Each handler
// names itself, so a test sees which method Express ran. Listens on the
// port given as the first argument (0: any) and prints "PORT <n>".
const express = require('express');
const methodOverride = require('method-override');

const app = express();
app.use(methodOverride('X-HTTP-Method-Override'));
app.use(methodOverride('X-HTTP-Method'));
app.use(methodOverride('X-Method-Override'));
app.use(methodOverride('_method'));
for (const method of ['get', 'post', 'put', 'patch', 'delete']) {
  app[method]('/things/:id', (req, res) => {
    res.json({ handler: method.toUpperCase(), user: req.get('x-auth-user') || null });
  });
}

const server = app.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  console.log(`PORT ${server.address().port}`);
});
