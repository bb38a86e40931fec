-- wrk script for scripts/load.sh: drives one route of the example apps.
--
--   LOAD_MODE    jwks | list | me | create
--   LOAD_TOKENS  file of "<tenant index>\t<access token>" lines; requests
--                take them in turn, so every tenant is served
--   LOAD_ACKS    (create) prefix of the files where each thread records
--                "<tenant index>\t<project id>" for every 201 it received

local mode = os.getenv("LOAD_MODE") or "jwks"
local tokens = {}
if mode ~= "jwks" then
    for line in io.lines(os.getenv("LOAD_TOKENS")) do
        local tenant, token = line:match("^(%d+)\t(.+)$")
        if tenant then
            tokens[#tokens + 1] = { tenant, "Bearer " .. token }
        end
    end
end

local next_thread = 1

function setup(thread)
    thread:set("thread_id", next_thread)
    next_thread = next_thread + 1
end

local sent = 0
local acks

function init(args)
    -- Threads start at different tenants.
    sent = thread_id * 7919
    if mode == "create" then
        acks = io.open(os.getenv("LOAD_ACKS") .. "." .. thread_id, "w")
        acks:setvbuf("line")
    end
end

function request()
    if mode == "jwks" then
        return wrk.format("GET", "/.well-known/jwks.json")
    end
    sent = sent + 1
    local entry = tokens[sent % #tokens + 1]
    local headers = { ["authorization"] = entry[2] }
    if mode == "list" then
        return wrk.format("GET", "/projects?limit=50", headers)
    elseif mode == "me" then
        return wrk.format("GET", "/auth/me", headers)
    end
    headers["content-type"] = "application/json"
    -- The name carries the tenant, so an acknowledgement names its tenant.
    local body = string.format('{"name":"load-%s-%d-%d"}', entry[1], thread_id, sent)
    return wrk.format("POST", "/projects", headers, body)
end

if mode == "create" then
    function response(status, headers, body)
        if status == 201 then
            local tenant = body:match('"name":"load%-(%d+)%-')
            local id = body:match('"id":"([^"]+)"')
            acks:write(tenant or "?", "\t", id or "?", "\n")
        end
    end
end
