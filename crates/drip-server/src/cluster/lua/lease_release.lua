-- Compare-and-delete: releases the lease (KEYS[1]) only if it still holds
-- ARGV[1]. Returns 1, or 0 if it was not ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
