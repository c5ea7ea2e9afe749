import t from 'tap';
import { CallCountHeadroom } from '../../../src/cluster/index.js';

t.test('headroom: calls against the limit, and none while the load admission refuses', async (t) => {
  let calls = 0;
  let max = 4;
  let refusing = false;
  const headroom = new CallCountHeadroom(() => calls, () => max, () => refusing);
  t.ok(headroom.hasRoom(), 'idle: room');
  t.equal(headroom.load(), 0);
  calls = 3;
  t.ok(headroom.hasRoom(), 'below the limit: room');
  t.equal(headroom.load(), 0.75, 'load is calls over the limit');
  calls = 4;
  t.notOk(headroom.hasRoom(), 'at the limit: none');
  max = 8;
  t.ok(headroom.hasRoom(), 'a reload raising the limit is seen at once');
  refusing = true;
  t.notOk(headroom.hasRoom(), 'the load admission refusing: none');
  t.equal(headroom.load(), 1, 'and counted as full, so placement prefers others');
});
