'use strict';
// The Node SDK wechat-api, used as its README says, pointed at caddy-wechat
// instead of api.weixin.qq.com, its token hooks returning a placeholder:
// the proxy adds the real token. Run by tests/sdk_test.go, which starts the
// emulator and Caddy and passes their addresses:
//   PROXY     the proxy in front of the emulator
//   DEAD      a proxy route whose upstream refuses connections (502)
//   NOTOKEN   a proxy route whose app cannot get a token (503)
//   EMULATOR  the emulator, for its control endpoints
//   APPID     the emulator's app
// Prints one line per check; exits 1 on the first failure.
const fs = require('fs');
const os = require('os');
const path = require('path');
const http = require('http');
const API = require('wechat-api');

const env = (name) => {
  if (!process.env[name]) throw new Error(name + ' is not set');
  return process.env[name];
};

// The SDK never holds a real token: the proxy does.
const client = (endpoint) => {
  const api = new API('placeholder-appid', 'placeholder-secret',
    (cb) => cb(null, { accessToken: 'placeholder', expireTime: Date.now() + 3600e3 }),
    (token, cb) => cb(null));
  api.endpoint = endpoint; // instead of https://api.weixin.qq.com
  return api;
};

// call runs an SDK method and resolves to {err, data, res}.
const call = (api, method, ...args) => new Promise((resolve) => {
  api[method](...args, (err, data, res) => resolve({ err, data, res }));
});

const post = (url) => new Promise((resolve, reject) => {
  const req = http.request(url, { method: 'POST' }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)); });
  req.on('error', reject);
  req.end();
});

const check = (what, ok, detail) => {
  if (!ok) {
    console.log('FAIL ' + what + ': ' + detail);
    process.exit(1);
  }
  console.log('ok   ' + what);
};

(async () => {
  const api = client(env('PROXY'));
  const appID = env('APPID');

  let r = await call(api, 'getUser', 'o1');
  check('getUser through the proxy', !r.err && r.data.errcode === 0 && r.data.appid === appID && r.data.access_token_params === 1,
    r.err || JSON.stringify(r.data));

  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'sdk-node-')), 'image.jpg');
  const image = Buffer.alloc(300 << 10, 7);
  fs.writeFileSync(file, image);
  r = await call(api, 'uploadMedia', file, 'image');
  check('uploadMedia (multipart)', !r.err && r.data.errcode === 0 && r.data.body_bytes > image.length &&
    r.data.content_type.startsWith('multipart/form-data'), r.err || JSON.stringify(r.data));

  r = await call(api, 'getMedia', 'bytes-100000');
  check('getMedia downloads the bytes', !r.err && Buffer.isBuffer(r.data) && r.data.length === 100000 && r.data[250] === 250 && r.data[251] === 0,
    r.err || (r.data && r.data.length));

  // WeChat drops the token: the proxy refreshes it and replays, the SDK
  // sees nothing (its own 40001 retry would replay with the placeholder).
  check('revoke the token', (await post(env('EMULATOR') + '/_emulator/revoke?appid=' + appID)) === 200, 'control endpoint');
  r = await call(api, 'getUser', 'o1');
  check('getUser after a revocation', !r.err && r.data.errcode === 0, r.err || JSON.stringify(r.data));
  check('revoke the token again', (await post(env('EMULATOR') + '/_emulator/revoke?appid=' + appID)) === 200, 'control endpoint');
  r = await call(api, 'uploadMedia', file, 'image');
  check('uploadMedia after a revocation', !r.err && r.data.errcode === 0 && r.data.body_bytes > image.length, r.err || JSON.stringify(r.data));

  // The proxy's own answers are errors to the SDK, downloads included: an
  // upstream that refuses connections, and an app without a token.
  for (const [route, status] of [['DEAD', 502], ['NOTOKEN', 503]]) {
    const broken = client(env(route));
    r = await call(broken, 'getMedia', 'bytes-100');
    check('getMedia via ' + route + ' is an error', r.err && r.res && r.res.statusCode === status && r.data && r.data.errcode === -1 &&
      /^wechat_token: /.test(r.err.message), r.err ? r.err.message : 'no error; data ' + JSON.stringify(r.data));
    r = await call(broken, 'getUser', 'o1');
    check('getUser via ' + route + ' is an error', r.err && r.err.code === -1 && /^wechat_token: /.test(r.err.message),
      r.err ? r.err.name + ' ' + r.err.message : 'no error');
  }
})().catch((e) => {
  console.log('FAIL ' + e.stack);
  process.exit(1);
});
