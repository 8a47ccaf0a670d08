// The calls that wait (recvDatagram, sendMsg, recvMsg): each runs poll + sendmsg/recvmsg on the libuv thread pool
// and settles a Promise. A thread-pool thread is never blocked longer than the caller's timeout: the socket
// calls use MSG_DONTWAIT and all waiting is poll() with the time left.
#pragma once

#include <napi.h>

namespace sdh {

Napi::Value RecvDatagram(const Napi::CallbackInfo& info);
Napi::Value SendMsgAsync(const Napi::CallbackInfo& info);
Napi::Value RecvMsgAsync(const Napi::CallbackInfo& info);

}  // namespace sdh
