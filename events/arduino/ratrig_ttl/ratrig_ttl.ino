// ratrig_ttl: turns ratrig event bytes into TTL pulses (Arduino Uno/Nano/Mega, Teensy).
//
// Byte protocol (host -> board, see events/outputs.py):
//   0x01 N      set the pulse width to N ms (1..255); the host sends it when it opens the port
//   1KKK SSSS   one event: KKK = kind (0 touchdown, 1 liftoff, 2..7 rules in config order),
//               SSSS = subject (paw index 0..3: front_left, front_right, hind_left, hind_right)
//   other bytes are ignored.
//
// Pin map (5 V TTL, active high, N ms per event; a new event on a pin restarts its pulse):
//   touchdown of paw 0..3  -> D2..D5
//   liftoff of paw 0..3    -> D6..D9
//   rule kinds 2..5        -> D10..D13 (kinds 6 and 7 -> D13)
//   every event also pulses A0 (a single "any event" line for recording systems with one input)
//
// Timing: at 115200 baud one byte takes 87 us on the wire; the loop below services pins every pass,
// so the pulse starts within about 0.1 ms of the byte arriving (USB frame scheduling of the host
// adds up to 1 ms on full-speed USB boards; Teensy's native USB is faster).

const uint8_t SET_PULSE_MS = 0x01;
const uint8_t N_PINS = 13;
const uint8_t PINS[N_PINS] = {2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, A0};
const uint8_t ANY_EVENT = 12;  // index of A0 in PINS

unsigned long pulseUs = 5000UL;
unsigned long pulseStart[N_PINS];
bool pulseOn[N_PINS];
bool expectPulseArg = false;

void startPulse(uint8_t i) {
  digitalWrite(PINS[i], HIGH);
  pulseStart[i] = micros();
  pulseOn[i] = true;
}

void setup() {
  for (uint8_t i = 0; i < N_PINS; i++) {
    pinMode(PINS[i], OUTPUT);
    digitalWrite(PINS[i], LOW);
    pulseOn[i] = false;
  }
  Serial.begin(115200);
}

void loop() {
  while (Serial.available() > 0) {
    uint8_t b = (uint8_t)Serial.read();
    if (expectPulseArg) {
      expectPulseArg = false;
      if (b >= 1) pulseUs = (unsigned long)b * 1000UL;
      continue;
    }
    if (b == SET_PULSE_MS) {
      expectPulseArg = true;
      continue;
    }
    if (!(b & 0x80)) continue;  // not an event byte
    uint8_t kind = (b >> 4) & 0x07;
    uint8_t subject = b & 0x0F;
    int8_t pin = -1;
    if (kind <= 1) {
      if (subject < 4) pin = kind * 4 + subject;  // D2..D9
    } else {
      pin = 8 + (kind - 2 < 3 ? kind - 2 : 3);     // D10..D13
    }
    if (pin >= 0) startPulse(pin);
    startPulse(ANY_EVENT);
  }
  unsigned long now = micros();
  for (uint8_t i = 0; i < N_PINS; i++) {
    if (pulseOn[i] && now - pulseStart[i] >= pulseUs) {  // unsigned arithmetic survives wrap-around
      digitalWrite(PINS[i], LOW);
      pulseOn[i] = false;
    }
  }
}
