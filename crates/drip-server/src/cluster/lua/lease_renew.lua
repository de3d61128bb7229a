-- Compare-and-extend: extends the lease (KEYS[1]) by ARGV[2] ms only if it
-- still holds ARGV[1] ("TOKEN NODE_ID"). Returns 1, or 0 if it was lost.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
